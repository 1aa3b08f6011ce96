"""The Telepathy bridge: sender hidden states -> K soft tokens in the receiver's input-embedding space.

normalizer (calibrated affine map, float32) -> Perceiver resampler (K latents, pre-LN blocks of cross-attention,
self-attention and a GELU MLP at an internal width) -> optional FSQ bottleneck -> output projection -> per-token RMS
normalisation times one learned scale. Initialisers follow the PyTorch reference (`telepathy_reference.md` §1.6).
Parameters carry the `bridge_*` logical axis names of `latentjax.parallel.rules`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from latentjax.bridge import fsq as fsq_lib

Array = jax.Array
RMS_EPS = 1e-8  # per-token RMS normalisation of the soft tokens
STAT_EPS = 1e-8  # normalizer: (h - mu_s) / (sigma_s + eps)
LN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """Shapes and numerics of one bridge. `width=None` means the receiver's hidden size (the reference)."""

    sender_dim: int
    receiver_dim: int
    num_latents: int = 8  # K soft tokens
    depth: int = 2
    num_heads: int = 8
    width: Optional[int] = None
    mlp_ratio: int = 4
    fsq_levels: tuple = ()  # e.g. (5,) * 32 or (8,) * 8; empty = no bottleneck
    output_scale_init: float = 0.03
    calibrated: bool = False  # normalizer from calibration statistics (else identity, as in every reference run)
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"

    @property
    def inner(self) -> int:
        return self.width or self.receiver_dim

    @property
    def receiver_stats_shape(self) -> tuple:
        """Per-dimension receiver statistics need equal widths; otherwise they are scalars."""
        return (self.receiver_dim,) if self.receiver_dim == self.sender_dim else ()

    def __post_init__(self):
        if self.inner % self.num_heads:
            raise ValueError(f"bridge width {self.inner} is not a multiple of num_heads={self.num_heads}.")

    @property
    def num_params(self) -> int:
        """Closed-form trainable parameter count (the reference's §1.5 formula, plus projections and FSQ)."""
        w, m = self.inner, self.mlp_ratio * self.inner
        attn = 4 * w * w + 4 * w
        block = 2 * attn + 3 * 2 * w + (w * m + m + m * w + w)
        total = self.depth * block + self.num_latents * w + 1
        if self.sender_dim != w:
            total += self.sender_dim * w + w
        if self.receiver_dim != w:
            total += w * self.receiver_dim + self.receiver_dim
        if self.fsq_levels:
            c = len(self.fsq_levels)
            total += (w * c + c) + (c * w + w)
        return total


CALIBRATION = "calibration"  # the variable collection holding the normalizer statistics (buffers, never trained)
STAT_NAMES = ("sender_mean", "sender_std", "receiver_mean", "receiver_std")


def normalize(h: Array, stats: dict) -> Array:
    """The statistical normalizer `(h - mu_s) / (sigma_s + 1e-8) * sigma_r + mu_r`, in float32, cast back."""
    f = {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}
    x = (h.astype(jnp.float32) - f["sender_mean"]) / (f["sender_std"] + STAT_EPS)
    return (x * f["receiver_std"] + f["receiver_mean"]).astype(h.dtype)


def _uniform(bound: float, names: Sequence[str]):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.with_logical_partitioning(init, tuple(names))


def _dense(cfg: BridgeConfig, features: int, names: tuple, kernel_bound: float, bias_bound: float, name: str):
    bias_init = (nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:]) if bias_bound == 0
                 else _uniform(bias_bound, names[-1:]))
    return nn.Dense(features, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                    kernel_init=_uniform(kernel_bound, names), bias_init=bias_init, name=name)


def _layer_norm(cfg: BridgeConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("bridge_width",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("bridge_width",)),
                        name=name)


class Attention(nn.Module):
    """Multi-head attention with biases (torch.nn.MultiheadAttention's math and initialisation)."""

    cfg: BridgeConfig

    @nn.compact
    def __call__(self, q_in: Array, kv_in: Array, key_mask: Optional[Array] = None) -> Array:
        cfg, w = self.cfg, self.cfg.inner
        h, hd = cfg.num_heads, w // cfg.num_heads
        qkv_bound = math.sqrt(6.0 / (w + 3 * w))  # xavier-uniform over the packed [3w, w] in-projection
        q = _dense(cfg, w, ("bridge_width", "bridge_heads"), qkv_bound, 0.0, "query")(q_in)
        k = _dense(cfg, w, ("bridge_width", "bridge_heads"), qkv_bound, 0.0, "key")(kv_in)
        v = _dense(cfg, w, ("bridge_width", "bridge_heads"), qkv_bound, 0.0, "value")(kv_in)
        b = q.shape[0]
        q, k, v = (x.reshape(b, x.shape[1], h, hd) for x in (q, k, v))
        mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(b, q.shape[1], w)
        return _dense(cfg, w, ("bridge_heads", "bridge_width"), 1.0 / math.sqrt(w), 0.0, "out")(out)


class ResamplerBlock(nn.Module):
    cfg: BridgeConfig

    @nn.compact
    def __call__(self, x: Array, kv: Array, kv_mask: Array) -> Array:
        cfg, w = self.cfg, self.cfg.inner
        m = cfg.mlp_ratio * w
        x = x + Attention(cfg, name="cross_attn")(_layer_norm(cfg, "ln1")(x), kv, kv_mask)
        y = _layer_norm(cfg, "ln2")(x)
        x = x + Attention(cfg, name="self_attn")(y, y)
        y = _layer_norm(cfg, "ln3")(x)
        y = _dense(cfg, m, ("bridge_width", "bridge_mlp"), 1 / math.sqrt(w), 1 / math.sqrt(w), "mlp_up")(y)
        y = nn.gelu(y, approximate=False)
        y = _dense(cfg, w, ("bridge_mlp", "bridge_width"), 1 / math.sqrt(m), 1 / math.sqrt(m), "mlp_down")(y)
        return x + y


@flax.struct.dataclass
class BridgeOutput:
    soft_tokens: Array  # [batch, K, receiver_dim], each token's RMS equal to output_scale
    pre_norm: Array  # [batch, K, receiver_dim] before the RMS normalisation (for the z-variance diagnostic)


class Bridge(nn.Module):
    """Sender hidden states [B, T, sender_dim] (+ mask [B, T]) -> BridgeOutput with [B, K, receiver_dim] tokens.

    With `cfg.calibrated` the normalizer statistics live in the "calibration" collection (identity at init;
    `latentjax.bridge.calibration` fills them), stored and checkpointed with the parameters."""

    cfg: BridgeConfig

    @nn.compact
    def __call__(self, hidden: Array, mask: Array) -> BridgeOutput:
        cfg, w = self.cfg, self.cfg.inner
        dtype = jnp.dtype(cfg.dtype)
        if cfg.calibrated:
            hidden = normalize(hidden, {k: jax.lax.stop_gradient(v) for k, v in self.statistics().items()})
        kv = hidden.astype(dtype)
        if cfg.sender_dim != w:  # torch.nn.Linear's default initialisation
            bound = 1 / math.sqrt(cfg.sender_dim)
            kv = _dense(cfg, w, ("bridge_in", "bridge_width"), bound, bound, "input_proj")(kv)
        latents = self.param("latents", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                     ("bridge_latents", "bridge_width")),
                             (cfg.num_latents, w), jnp.dtype(cfg.param_dtype))
        x = jnp.broadcast_to(latents.astype(dtype), (hidden.shape[0], cfg.num_latents, w))
        for i in range(cfg.depth):
            x = ResamplerBlock(cfg, name=f"block_{i}")(x, kv, mask)
        if cfg.fsq_levels:
            x = FSQBottleneck(cfg, name="fsq")(x)
        if cfg.receiver_dim != w:
            bound = 1 / math.sqrt(w)
            x = _dense(cfg, cfg.receiver_dim, ("bridge_width", "bridge_out"), bound, bound, "output_proj")(x)
        scale = self.param("output_scale",
                           nn.with_logical_partitioning(nn.initializers.constant(cfg.output_scale_init), ("scalar",)),
                           (1,), jnp.dtype(cfg.param_dtype))
        xf = x.astype(jnp.float32)
        rms = jnp.sqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + RMS_EPS)
        soft = (xf / rms * scale.astype(jnp.float32)).astype(dtype)
        return BridgeOutput(soft_tokens=soft, pre_norm=x)

    def statistics(self) -> dict:
        """The calibration buffers (identity at init): sender [sender_dim], receiver per `receiver_stats_shape`."""
        cfg = self.cfg
        sender, receiver = ((cfg.sender_dim,), ("bridge_in",)), (cfg.receiver_stats_shape,
                                                                  ("bridge_out",)[:len(cfg.receiver_stats_shape)])
        out = {}
        for name, (shape, names) in zip(STAT_NAMES, (sender, sender, receiver, receiver)):
            fill = jnp.ones if name.endswith("std") else jnp.zeros
            init = lambda: nn.LogicallyPartitioned(fill(shape, jnp.float32), names)  # noqa: E731
            out[name] = self.variable(CALIBRATION, name, init).value
        return out


class FSQBottleneck(nn.Module):
    """Down-projection to len(levels) channels, finite scalar quantisation (straight-through), up-projection."""

    cfg: BridgeConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg, w = self.cfg, self.cfg.inner
        c = len(cfg.fsq_levels)
        z = _dense(cfg, c, ("bridge_width", "bridge_code"), 1 / math.sqrt(w), 1 / math.sqrt(w), "proj_down")(x)
        q = fsq_lib.quantize(z.astype(jnp.float32), cfg.fsq_levels).astype(x.dtype)
        return _dense(cfg, w, ("bridge_code", "bridge_width"), 1 / math.sqrt(c), 1 / math.sqrt(c), "proj_up")(q)


def init_bridge(cfg: BridgeConfig, rng: Array) -> dict:
    """Boxed (logically named) bridge variables: {"params": ...} (+ {"calibration": identity statistics})."""
    hidden = jnp.zeros((1, 1, cfg.sender_dim), jnp.dtype(cfg.dtype))
    return dict(Bridge(cfg).init(rng, hidden, jnp.ones((1, 1), bool)))


def count_params(params: Any) -> int:
    """Sum of leaf sizes (boxed or not)."""
    return sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(params)))


def median_row_rms(embedding: Any) -> float:
    """The median over vocabulary rows of each row's RMS (the reference's output_scale initialiser)."""
    e = jnp.asarray(embedding, jnp.float32)
    return float(jnp.median(jnp.sqrt(jnp.mean(e * e, axis=-1))))
