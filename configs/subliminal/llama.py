"""Seed 003 at full scale on a Llama (or Mistral) Instruct folder given on the command line:

    python launch/subliminal.py --config=configs/subliminal/llama.py:/models/Meta-Llama-3-8B-Instruct \
        --run_dir=runs/sub_llama --phase=all
    ... :/models/Meta-Llama-3-8B-Instruct,seed      # the seed repository's protocol instead of the paper's
    ... :/models/Meta-Llama-3-8B-Instruct,smoke     # shrunk to a smoke run

For a multi-GPU mesh: --config.mesh.shape='(1,-1,1)' (FSDP) etc.
"""
from configs.subliminal.defaults import finish, parse_arg, subliminal_config


def get_config(arg=None):
    path, protocol, small, _ = parse_arg(arg)
    if not path:
        raise ValueError("Give the base model folder: --config=configs/subliminal/llama.py:/path/to/model")
    return finish(subliminal_config(path, protocol), small)
