"""Helpers for tests and benchmarks: tiny random Hugging Face checkpoints written by transformers itself, and a
byte-level tokenizer to go with them."""
from __future__ import annotations

import os
from typing import Any

BYTE_SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 = the tiny configs' pad, bos and eos


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


def save_byte_tokenizer(path: str) -> str:
    """A byte-level tokenizer (3 specials + 256 bytes = 259 ids, no merges) that prepends BOS, saved to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(BYTE_SPECIALS)}
    vocab.update({ch: len(BYTE_SPECIALS) + b for b, ch in enumerate(_byte_chars())})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(list(BYTE_SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    return path


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable-character map (what the ByteLevel pre-tokenizer emits), in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars
