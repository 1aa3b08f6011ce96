"""Preserved seed run `phase1_full_20251116_201212`: Phase 1, Mistral -> Llama, all fixes (KL + prompt alignment +
RoPE, decode off); bridged 0.680 -> 0.645, source 0.540, target 0.770.

Reproduced as: DiT with the identity-initialised source-conditioner map on (the reference's "RoPE" fix), KL 0.03 and
prompt alignment 0.001 on. The spec does not state this run's teacher or mode: answer teacher and soft_plus_text
(the defaults) are our choice. The resolved config saved with the run (workdir/config.json) shows every weight.
"""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("mistral_to_llama", arg=arg)
    config.translator.dit.align = True
    return config
