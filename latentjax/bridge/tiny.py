"""A tiny sender/receiver pair for offline CI: random HF checkpoints (`latentjax.testing.save_tiny_hf_model`) with a
byte-level tokenizer (`latentjax.testing.save_byte_tokenizer`), so the whole bridge loop (tokenize, train, generate,
score) runs without downloads.

The sender is a Llama (hidden 72), the receiver a Mistral with a *different* width (hidden 48, 6 heads of 8,
sliding window 7), so the bridge's input and output projections are exercised.
"""
from __future__ import annotations

import os

from latentjax.testing import save_byte_tokenizer, save_tiny_hf_model  # save_byte_tokenizer re-exported

RECEIVER_OVERRIDES = dict(hidden_size=48, head_dim=8, num_attention_heads=6, num_key_value_heads=2,
                          intermediate_size=96)


def ensure_tiny_pair(root: str, sender_seed: int = 0, receiver_seed: int = 1) -> tuple[str, str]:
    """Write (once) `root/sender` (tiny Llama) and `root/receiver` (tiny Mistral, narrower), each with the byte
    tokenizer; returns their paths."""
    paths = []
    for name, family, seed, overrides in (("sender", "llama", sender_seed, {}),
                                          ("receiver", "mistral", receiver_seed, RECEIVER_OVERRIDES)):
        path = os.path.join(root, name)
        if not os.path.exists(os.path.join(path, "tokenizer.json")):
            save_tiny_hf_model(path, family, seed=seed, **overrides)
            save_byte_tokenizer(path)
        paths.append(path)
    return paths[0], paths[1]
