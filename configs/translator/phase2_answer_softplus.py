"""Preserved seed run `answer_softplus_phase2_swap_20251119_020705`: Llama -> Mistral, answer teacher,
soft_plus_text, standard weights; bridged 0.360 (step 1250) -> 0.315 (step 1750; the job timed out).

Reproduced as: DiT, answer teacher, soft_plus_text. At that commit the prompt-alignment weight was applied twice, so
the effective weight was 0.001 squared = 1e-6, which is what we set (use 0.001 for the fixed code). The resolved
config saved with the run (workdir/config.json) shows every weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("llama_to_mistral", arg=arg, teacher="answer", mode="soft_plus_text",
                                      loss=dict(prompt_alignment=1e-6))
    return config
