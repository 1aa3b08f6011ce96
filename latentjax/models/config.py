"""Decoder configuration read from a Hugging Face `config.json` (Llama 2/3/3.x and Mistral families).

Both spellings of the RoPE fields are accepted: the top-level `rope_theta` / `rope_scaling` written by
transformers 4.x (every released Llama/Mistral checkpoint) and the `rope_parameters` dict written by 5.x.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


class ConfigError(ValueError):
    """A model config that latentjax cannot run faithfully."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Everything the decoder needs; the family differences are fields, not code paths."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = RopeConfig()
    sliding_window: Optional[int] = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 8192
    model_type: str = "llama"
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple = ()
    pad_token_id: Optional[int] = None
    # Runtime choices (not part of the checkpoint).
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat_policy: str = "none"  # none | full | minimal | lean | save_dots
    attention_impl: str = "auto"  # xla | cudnn | pallas | auto (see decoder.attention_implementation)
    scan_unroll: int = 1  # layers per scan iteration (num_layers = fully unrolled)
    # False: one parameter subtree per layer (`layers_0`, ...; see models.model.unstack_layers), run as straight-line
    # code. Decoding reads each layer's weights in place instead of slicing them out of a stacked array in a loop.
    scan_layers: bool = True
    # True: q/k/v in one projection ([embed, kv_heads, q_per_kv + 2, head_dim], each kv head beside its queries) and
    # gate/up in one ([embed, 2, mlp]); see models.model.fuse_projections. One wide matmul reads the weights once; a
    # batch-1 decode step otherwise lowers the narrow k/v products to slow multiply-reduce kernels. Inference and
    # frozen models only (LoRA adapts the separate projections).
    fused_projections: bool = False
    # True: each layer's two RMSNorm scales are multiplied into the input rows of the projections they feed (q/k/v,
    # gate/up; see models.model.fold_norm_scales), so the norms only normalise: the same function, without a
    # separate scale-multiply kernel per norm. Frozen models only (a LoRA factor reads the scaled input).
    folded_norms: bool = False

    def replace(self, **kw) -> "DecoderConfig":
        return dataclasses.replace(self, **kw)

    @property
    def num_params(self) -> int:
        d, h, kv, hd, m = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        per_layer = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * m + 2 * d
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + d


def _rope_from_hf(raw: dict) -> RopeConfig:
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and params:
        scaling = dict(params)
        theta = scaling.get("rope_theta", raw.get("rope_theta", 10000.0))
    else:
        scaling = dict(raw.get("rope_scaling") or {})
        theta = raw.get("rope_theta", 10000.0)
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"RoPE type {rope_type!r} is not supported by latentjax (supported: {', '.join(SUPPORTED_ROPE_TYPES)}); "
            "use a checkpoint with one of those or add the frequency rule to latentjax/models/rope.py.")
    return RopeConfig(
        theta=float(theta),
        rope_type=rope_type,
        factor=float(scaling.get("factor", 1.0)),
        low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", 8192)),
    )


def from_hf_dict(raw: dict, **overrides: Any) -> DecoderConfig:
    """Build a DecoderConfig from the parsed contents of an HF config.json."""
    archs = raw.get("architectures") or []
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES or (archs and not set(archs) & set(SUPPORTED_ARCHITECTURES)):
        raise ConfigError(
            f"Architecture {archs or model_type!r} (model_type={model_type!r}) is not supported; latentjax ports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} only.")
    num_heads = int(raw["num_attention_heads"])
    hidden = int(raw["hidden_size"])
    head_dim = raw.get("head_dim") or hidden // num_heads
    eos = raw.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
    window = raw.get("sliding_window") if model_type == "mistral" else None
    if raw.get("use_sliding_window") is False:
        window = None
    cfg = DecoderConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope=_rope_from_hf(raw),
        sliding_window=int(window) if window is not None else None,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
        model_type=model_type,
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=raw.get("pad_token_id"),
    )
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"Activation {raw.get('hidden_act')!r} is not supported; Llama/Mistral use 'silu'.")
    if num_heads % cfg.num_kv_heads:
        raise ConfigError(f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={cfg.num_kv_heads}.")
    return cfg.replace(**overrides) if overrides else cfg


def load_hf_config(path: str, **overrides: Any) -> DecoderConfig:
    """Read `<path>/config.json` (or a config.json path) into a DecoderConfig."""
    file = path if path.endswith(".json") else os.path.join(path, "config.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"No config.json at {file}: point latentjax at a Hugging Face model folder.")
    with open(file) as f:
        return from_hf_dict(json.load(f), **overrides)
