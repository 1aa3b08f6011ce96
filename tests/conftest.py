"""Shared fixtures: tiny random HF checkpoints written by transformers, the offline SmolLM2 folder, data dir."""
from __future__ import annotations

import os

import numpy as np
import pytest

from latentjax.testing import save_tiny_hf_model

TINY_VARIANTS = {
    # Llama-3.1 style: llama3 RoPE scaling, GQA (6 heads / 2 KV), head_dim 12, untied.
    "llama31": ("llama", {}),
    # Llama-2 style: default RoPE theta 1e4, multi-head attention, tied embeddings.
    "llama2_tied": ("llama", dict(rope_scaling=None, rope_theta=10000.0, num_key_value_heads=6,
                                  tie_word_embeddings=True)),
    # Bias flags on.
    "llama_bias": ("llama", dict(attention_bias=True, mlp_bias=True)),
    # Mistral with a sliding window (7) shorter than the test sequences.
    "mistral_window": ("mistral", {}),
    # Mistral v0.3 style: no sliding window.
    "mistral_nowindow": ("mistral", dict(sliding_window=None)),
}


def relative_error(ours, ref) -> float:
    """max |ours - ref| / max |ref|: the parity measure used throughout the tests."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny_hf_model(str(root / name), family, seed=i, **kw)
            for i, (name, (family, kw)) in enumerate(TINY_VARIANTS.items())}


@pytest.fixture(scope="session")
def smollm2_dir():
    try:
        from latentjax.convert.gguf import smollm2_path

        return smollm2_path()
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"offline SmolLM2 model unavailable: {e}")


@pytest.fixture(scope="session")
def data_dir():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.environ.get("LATENTJAX_DATA_DIR"), os.path.join(here, "..", "shared", "data"),
                 os.path.join(here, "shared", "data")):
        if cand and os.path.isdir(cand):
            return os.path.abspath(cand)
    pytest.skip("../shared/data is absent: real-data tests skipped")
