"""The calibration pass: per-dimension mean and standard deviation of the sender's tapped hidden states and of the
receiver's input embeddings over a sample of training prompts (the statistical normalizer's affine map).

Statistics are population moments (numpy's `mean`/`std`, ddof 0) over every real (unpadded) token, or with
`pooling="sequence_mean"` over one masked-mean vector per prompt (the reference's calibration script). Batches are
reduced on the device and merged on the host in float64 (Chan's parallel update), so the sample can be large.
The receiver reads the same prompt text with its own tokenizer and no special tokens. When the two widths differ,
the receiver statistics are reduced to scalars (the mean and standard deviation over all dimensions).
"""
from __future__ import annotations

import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.bridge.forward import BridgedModel, sender_hidden
from latentjax.bridge.model import CALIBRATION, STAT_NAMES

POOLINGS = ("token", "sequence_mean")


def _moments(x: jax.Array, mask: jax.Array, pooling: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(count, mean [D], M2 [D]) of x [B, T, D] over masked tokens (or over rows' masked means)."""
    x, m = x.astype(jnp.float32), mask.astype(jnp.float32)[..., None]
    if pooling == "sequence_mean":
        tokens = jnp.sum(m, axis=1)  # [B, 1]
        x = (jnp.sum(x * m, axis=1) / jnp.maximum(tokens, 1.0))[:, None]  # [B, 1, D]
        m = (tokens > 0).astype(jnp.float32)[:, None]  # [B, 1, 1]
    n = jnp.sum(m)
    mean = jnp.sum(x * m, axis=(0, 1)) / jnp.maximum(n, 1.0)
    m2 = jnp.sum(jnp.square((x - mean) * m), axis=(0, 1))
    return n, mean, m2


@functools.partial(jax.jit, static_argnums=(0, 1))
def _batch_moments(model: BridgedModel, pooling: str, frozen: Any, batch: dict):
    h = sender_hidden(model.tap, frozen["sender"], batch["sender_input_ids"], batch["sender_attention_mask"])
    e = model.receiver_embed(frozen, batch["text_input_ids"])
    return (_moments(h, batch["sender_attention_mask"], pooling),
            _moments(e, batch["text_attention_mask"], pooling))


class _Running:
    """Chan et al.'s pairwise merge of (count, mean, M2), in float64."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0.0, None, None

    def add(self, n, mean, m2) -> None:
        n, mean, m2 = float(n), np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        if n == 0:
            return
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta * delta * self.n * n / total
        self.n = total

    def per_dim(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None:
            raise ValueError("The calibration sample has no tokens.")
        return self.mean, np.sqrt(self.m2 / self.n)

    def overall(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over all dimensions pooled."""
        mean = self.mean.mean()
        var = (self.m2.sum() + self.n * np.sum((self.mean - mean) ** 2)) / (self.n * self.mean.size)
        return np.asarray(mean), np.asarray(np.sqrt(var))


def calibrate(model: BridgedModel, frozen: Any, batches: Iterable[dict], pooling: str = "token") -> dict:
    """Statistics {sender_mean, sender_std, receiver_mean, receiver_std} (float32 numpy) from batches holding
    sender_input_ids / sender_attention_mask (the sender prompts) and text_input_ids / text_attention_mask (the
    same texts in the receiver's tokenizer)."""
    if pooling not in POOLINGS:
        raise ValueError(f"calibration pooling must be one of {POOLINGS}, got {pooling!r}.")
    sender, receiver = _Running(), _Running()
    for batch in batches:
        s, r = jax.device_get(_batch_moments(model, pooling, frozen, {k: jnp.asarray(v) for k, v in batch.items()}))
        sender.add(*s)
        receiver.add(*r)
    s_mean, s_std = sender.per_dim()
    r_mean, r_std = receiver.per_dim() if model.bridge.receiver_stats_shape else receiver.overall()
    return {k: np.asarray(v, np.float32) for k, v in zip(STAT_NAMES, (s_mean, s_std, r_mean, r_std))}


def with_calibration(variables: dict, stats: dict) -> dict:
    """Bridge variables with the calibration collection replaced by `stats` (boxes and their names kept)."""
    old = variables[CALIBRATION]

    def put(box, value):
        value = jnp.asarray(value, jnp.float32).reshape(np.shape(box.value if hasattr(box, "value") else box))
        return box.replace_boxed(value) if hasattr(box, "replace_boxed") else value

    return {**variables, CALIBRATION: {k: put(old[k], stats[k]) for k in STAT_NAMES}}
