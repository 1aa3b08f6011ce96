"""One declarative map between Hugging Face Llama/Mistral weight names and latentjax's parameter tree.

Import (safetensors -> JAX) and export (JAX -> safetensors, PEFT adapters) both read this table. HF matrices are
[out, in]; ours are Flax kernels [in, out], so "T" marks a transpose. Per-layer tensors are stacked on axis 0.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from latentjax.models.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str  # HF key; "{i}" marks the layer index for stacked entries
    path: tuple  # path in the params tree
    transpose: bool  # HF [out, in] <-> Flax [in, out]
    stacked: bool  # one HF tensor per layer, stacked on axis 0

    def hf_key(self, layer: Optional[int] = None) -> str:
        return self.hf.format(i=layer) if self.stacked else self.hf


LAYER_PROJECTIONS = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}


def entries(config: DecoderConfig) -> list[Entry]:
    out = [
        Entry("model.embed_tokens.weight", ("embed_tokens", "embedding"), False, False),
        Entry("model.norm.weight", ("norm", "scale"), False, False),
        Entry("model.layers.{i}.input_layernorm.weight", ("layers", "input_layernorm", "scale"), False, True),
        Entry("model.layers.{i}.post_attention_layernorm.weight", ("layers", "post_attention_layernorm", "scale"),
              False, True),
    ]
    if not config.tie_word_embeddings:
        out.append(Entry("lm_head.weight", ("lm_head", "kernel"), True, False))
    for proj, block in LAYER_PROJECTIONS.items():
        out.append(Entry(f"model.layers.{{i}}.{block}.{proj}.weight", ("layers", block, proj, "kernel"), True, True))
        has_bias = config.attention_bias if block == "self_attn" else config.mlp_bias
        if has_bias:
            out.append(Entry(f"model.layers.{{i}}.{block}.{proj}.bias", ("layers", block, proj, "bias"), False, True))
    return out


# Buffers some checkpoints carry that are recomputed, not loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
