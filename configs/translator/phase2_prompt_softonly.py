"""Preserved seed run `prompt_softonly_phase2_swap_20251119_001243`: Llama -> Mistral, prompt teacher, soft_only,
prompt_alignment_weight=1.0, dit_loss_weight=1.0; collapsed to 0.025 ("#### 1", "#### 10").

Reproduced as: DiT, prompt teacher, soft_only, prompt alignment 1.0 (the reference applied the weight twice: 1.0
squared is still 1.0) and flow loss 1.0. The resolved config saved with the run (workdir/config.json) shows every
weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("llama_to_mistral", arg=arg, teacher="prompt", mode="soft_only",
                                      loss=dict(prompt_alignment=1.0, dit_flow=1.0))
    return config
