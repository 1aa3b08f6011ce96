"""Preserved seed run `ablB_20251116_234242`: KL only (prompt/RoPE disabled); bridged 0.710 -> 0.625.

Reproduced as: prompt_alignment = info_nce = 0 and the conditioner's align map off, so the ablation really removes
them (the reference's scripts B and C used identical flags). The resolved config saved with the run
(workdir/config.json) shows every weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("mistral_to_llama", arg=arg, loss=dict(prompt_alignment=0.0, info_nce=0.0))
    config.translator.dit.align = False
    return config
