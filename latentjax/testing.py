"""Helpers for tests and benchmarks: tiny random Hugging Face checkpoints written by transformers itself."""
from __future__ import annotations

import os
from typing import Any


def tiny_hf_config(family: str = "llama", **overrides: Any):
    """A small LlamaConfig / MistralConfig with odd sizes (6 heads, 2 KV heads, head_dim 12)."""
    from transformers import LlamaConfig, MistralConfig

    base = dict(vocab_size=331, hidden_size=72, intermediate_size=136, num_hidden_layers=3, num_attention_heads=6,
                num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-5, max_position_embeddings=512,
                tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        base["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        base["rope_theta"] = 500000.0
        base.update(overrides)
        return LlamaConfig(**base)
    if family == "mistral":
        base["rope_theta"] = 1000000.0
        base["sliding_window"] = 7
        base.update(overrides)
        return MistralConfig(**base)
    raise ValueError(family)


def save_tiny_hf_model(path: str, family: str = "llama", seed: int = 0, **overrides: Any) -> str:
    """Build a random-weight HF model in float32 and `save_pretrained` it to `path`; returns path."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_hf_config(family, **overrides)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # norms at 1.0 would hide a missing scale; perturb them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return path
