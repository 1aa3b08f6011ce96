"""Smoke run of every phase on SmolLM2-135M-Instruct (offline copy): 4 training steps per phase, 192 prompts,
4 sequences, 4 items per benchmark (MATH-500 for MATH), float32. Minutes on a CPU, seconds on a GPU.

    python launch/subliminal.py --config=configs/subliminal/smoke.py --run_dir=/tmp/sub_smoke --phase=all
    ... --config=configs/subliminal/smoke.py:/path/to/other_hf_model,seed
"""
from configs.subliminal.defaults import parse_arg, smoke, subliminal_config


def get_config(arg=None):
    path, protocol, _, _ = parse_arg(arg, "smollm2")
    return smoke(subliminal_config(path, protocol))
