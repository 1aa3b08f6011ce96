"""latentjax.translator: the GSM8K translator family (seed 004, "Phase 1 / Phase 2").

  modules     TranslatorConfig; `cross` (gated cross-attention, tanh gates at 0) and `dit` (rectified-flow DiT with
              AdaLN-Zero blocks) translators, RMS matching, Euler sampling with optional classifier-free guidance
  losses      the loss terms as pure array functions (KL, InfoNCE, MSEs, format surrogate/monitor, flow loss)
  forward     TranslatorModel: source tap -> translator -> target fed [soft tokens] + [text]; weighted loss
  data        prompts, few-shot prefix, curriculum (`mode_at_step`), GSM8K rows -> padded batches
  evaluate    Evaluator: greedy chain-of-thought generation, official GSM8K extraction, JSONL + summary
  experiment  build(config, mesh) -> Experiment (registry name "translator")
  summarize   `python -m latentjax.translator.summarize <jsonl>...`: accuracy, invalid rate, frequent outputs
"""
from latentjax.translator.forward import LossWeights, TranslatorModel
from latentjax.translator.modules import (CrossConfig, DiTConfig, TranslatorConfig, euler_sample, init_translator,
                                          rms_match)

__all__ = ["CrossConfig", "DiTConfig", "LossWeights", "TranslatorConfig", "TranslatorModel", "euler_sample",
           "init_translator", "rms_match"]
