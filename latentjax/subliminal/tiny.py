"""A tiny random Llama with SmolLM2's tokenizer (vocab 49,152) whose samples are mostly digits, commas and EOS,
so a smoke run of the whole pipeline gets some valid number sequences in seconds.

How: residual dimension 0 is a constant (every embedding row has C there and no attention/MLP output writes to
it), so after the final norm it is a fixed positive value; the LM head rows of the digit, comma and EOS tokens get
weight on dimension 0 (others keep a small random init), which fixes their logits far above the rest.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def save_number_model(path: str, tokenizer_dir: Optional[str] = None, seed: int = 0, hidden_size: int = 32,
                      num_layers: int = 2, digit_logit: float = 14.0, comma_logit: float = 15.5,
                      eos_logit: float = 13.7) -> str:
    """Write the model (float32 safetensors + SmolLM2 tokenizer files) to `path`; returns `path`."""
    import torch
    from safetensors.torch import load_file, save_file

    from latentjax.testing import save_tiny_hf_model

    if tokenizer_dir is None:
        from latentjax.convert.gguf import smollm2_path

        tokenizer_dir = smollm2_path()
    save_tiny_hf_model(path, "llama", seed=seed, vocab_size=49152, hidden_size=hidden_size,
                       intermediate_size=2 * hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=hidden_size // 4, bos_token_id=1, eos_token_id=2,
                       pad_token_id=2, rope_scaling=None, rope_theta=10000.0)
    for name in TOKENIZER_FILES:
        src = os.path.join(tokenizer_dir, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(path, name))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    weights_file = os.path.join(path, "model.safetensors")
    w = load_file(weights_file)
    const = 10.0
    w["model.embed_tokens.weight"][:, 0] = const
    for key in list(w):
        if key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            w[key][0, :] = 0.0
    w["model.norm.weight"][0] = 1.0
    head = w["lm_head.weight"]
    scale = const / float(torch.sqrt(torch.tensor(const ** 2 / hidden_size)))  # normed value of dimension 0
    targets = {str(d): digit_logit for d in range(10)}
    targets[","] = comma_logit
    for token, logit in targets.items():
        head[tok.convert_tokens_to_ids(token), 0] = logit / scale
    head[tok.eos_token_id, 0] = eos_logit / scale
    save_file({k: v.contiguous() for k, v in w.items()}, weights_file, metadata={"format": "pt"})
    return path
