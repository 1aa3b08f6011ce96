"""Finite scalar quantisation (Mentzer et al. 2023) with straight-through rounding.

Channel i is bounded to L_i levels and rounded; the result is rescaled to [-1, 1], so channel i takes values on the
grid {(j - L_i // 2) / (L_i // 2) : j = 0 .. L_i - 1}. Gradients pass through the rounding unchanged.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _round_ste(x: jax.Array) -> jax.Array:
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
    """Squash each channel into (-L/2, L/2) (shifted by 1/2 for even L) so rounding gives exactly L values."""
    lv = jnp.asarray(levels, jnp.float32)
    half = (lv - 1) * (1 + eps) / 2
    offset = jnp.where(lv % 2 == 0, 0.5, 0.0)
    shift = jnp.arctanh(offset / half)
    return jnp.tanh(z + shift) * half - offset


def quantize(z: jax.Array, levels: Sequence[int]) -> jax.Array:
    """z [..., len(levels)] -> quantised values on each channel's grid, straight-through gradients."""
    if z.shape[-1] != len(levels):
        raise ValueError(f"FSQ got {z.shape[-1]} channels for {len(levels)} levels.")
    half_width = jnp.asarray([lv // 2 for lv in levels], jnp.float32)
    return _round_ste(bound(z, levels)) / half_width


def grid(level: int) -> np.ndarray:
    """The values one channel with `level` levels can take."""
    return (np.arange(level) - level // 2) / (level // 2)
