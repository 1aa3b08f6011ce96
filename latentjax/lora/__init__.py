"""LoRA adapters for the Flax decoders, applied from outside the model; PEFT export/import; SFT experiment."""
from latentjax.lora.adapter import (LoraForward, abstract_lora, init_lora, lora_apply, lora_shardings, lora_targets,
                                    merge, merged_model)
from latentjax.lora.config import LoraConfig, resolve_targets
from latentjax.lora.peft import export_peft, import_peft, read_peft_config

__all__ = ["LoraConfig", "LoraForward", "abstract_lora", "export_peft", "import_peft", "init_lora", "lora_apply",
           "lora_shardings", "lora_targets", "merge", "merged_model", "read_peft_config", "resolve_targets"]
