"""Preserved seed run `ablC_20251117_013909`: KL + prompt alignment (no RoPE); bridged plateau 0.615 -> 0.655.

Reproduced as: prompt alignment 0.001 (and info_nce 0.05) on, the conditioner's align map off. The resolved config
saved with the run (workdir/config.json) shows every weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("mistral_to_llama", arg=arg)
    config.translator.dit.align = False
    return config
