"""LoRA adapters for the Flax decoders, applied from outside the model; PEFT export/import; SFT experiment.

    cfg = LoraConfig(rank=16, alpha=32, dropout=0.05, targets="all")          # or "q,v", "self_attn.*", ...
    lora = rules_lib.unbox(init_lora(model.config, cfg, rng))                  # PEFT init: B = 0
    out = lora_apply(model.config, model.params, lora, cfg, input_ids, mask)  # DecoderOutput, jittable
    fast = merged_model(model, lora, cfg)                                     # plain LanguageModel, merged weights
    generate(model.config, {"base": model.params, "lora": lora}, ids, mask, apply_fn=LoraForward(model.config, cfg))
    export_peft("out/adapter", lora, cfg, model.config, base_model_name_or_path=model.path)
    lora = import_peft("out/adapter", model.config, mesh); cfg = read_peft_config("out/adapter")

Training: the "lora_sft" experiment (latentjax.lora.experiment, configs/lora_sft_tiny.py).
"""
from latentjax.lora.adapter import (LoraForward, abstract_lora, init_lora, lora_apply, lora_shardings, lora_targets,
                                    merge, merged_model)
from latentjax.lora.config import LoraConfig, resolve_targets
from latentjax.lora.peft import export_peft, import_peft, read_peft_config

__all__ = ["LoraConfig", "LoraForward", "abstract_lora", "export_peft", "import_peft", "init_lora", "lora_apply",
           "lora_shardings", "lora_targets", "merge", "merged_model", "read_peft_config", "resolve_targets"]
