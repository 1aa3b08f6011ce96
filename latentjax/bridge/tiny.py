"""A tiny sender/receiver pair for offline CI: random HF checkpoints (`latentjax.testing.save_tiny_hf_model`) with a
byte-level tokenizer, so the whole bridge loop (tokenize, train, generate, score) runs without downloads.

The sender is a Llama (hidden 72), the receiver a Mistral with a *different* width (hidden 48, 6 heads of 8,
sliding window 7), so the bridge's input and output projections are exercised.
"""
from __future__ import annotations

import os

from latentjax.testing import save_tiny_hf_model

SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 = the tiny configs' pad, bos and eos
RECEIVER_OVERRIDES = dict(hidden_size=48, head_dim=8, num_attention_heads=6, num_key_value_heads=2,
                          intermediate_size=96)


def save_byte_tokenizer(path: str) -> str:
    """A byte-level tokenizer (3 specials + 256 bytes = 259 ids, no merges) that prepends BOS, saved to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({ch: len(SPECIALS) + b for b, ch in enumerate(_byte_chars())})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(list(SPECIALS))
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
