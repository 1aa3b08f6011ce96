"""Preserved seed run `phase2_swap_20251118_192955`: Llama -> Mistral, prompt teacher, soft_plus_text; bridged 0.290
-> 0.260 (outputs duplicated the 8-shot prompt).

Reproduced as: DiT, prompt teacher, soft_plus_text, standard weights. The resolved config saved with the run
(workdir/config.json) shows every weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("llama_to_mistral", arg=arg, teacher="prompt", mode="soft_plus_text")
    return config
