"""Control: random numbers without a teacher: each kept row of the main run keeps its prompt, format and count of
numbers, the values drawn uniformly in 0..999. Students only.

    python launch/subliminal.py --config=configs/subliminal/random_numbers.py:/models/llama \
        --config.generate.sequences_from=runs/main/generate/sequences.jsonl --run_dir=runs/random --phase=all
"""
from configs.subliminal.defaults import control_config, parse_arg


def get_config(arg=None):
    path, protocol, small, _ = parse_arg(arg, "smollm2")
    return control_config(path, protocol, small, source="file", control="random_values")
