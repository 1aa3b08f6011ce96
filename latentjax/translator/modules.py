"""The two GSM8K translators (source last-layer states -> K soft tokens in the target's embedding space).

  cross  bottlenecked gated cross-attention: K learned queries (orthogonal init) at width W; per block
         RMSNorm -> self-attention, RMSNorm(queries) + RMSNorm(source) -> cross-attention (key padding masked,
         attention dropout), RMSNorm -> SwiGLU MLP (inner 2/3 * 4 * W), each added through tanh(gate), gate = 0
         at init; then RMSNorm and a linear map to the target width. At init every block is the identity on the
         queries, so the output does not depend on the source.
  dit    a rectified-flow DiT: source conditioner (identity-initialised linear "align" map, masked mean or
         attention pooling, MLP to the conditioning width) + sinusoidal timestep embedding; AdaLN-Zero blocks at
         an internal width; projections target width <-> width. `condition` / `velocity` are separate methods so a
         sampler conditions once and evaluates the velocity field per step.

Both outputs are RMS-matched (`rms_match`): each token is rescaled so its RMS equals the RMS of the target's
embedding table (a constant computed once at build), the factor computed without gradient and clamped to
[0.25, 4]. Parameters reuse the bridge's logical axis names (`bridge_in`, `bridge_width`, `bridge_heads`,
`bridge_mlp`, `bridge_latents`, `bridge_out`, `scalar`) of `latentjax.parallel.rules.DEFAULT_RULES`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.decoder import RMSNorm

Array = jax.Array
KINDS = ("cross", "dit")
POOLINGS = ("mean", "attention")
RMS_CLAMP = (0.25, 4.0)
NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class CrossConfig:
    width: int = 1024  # bottleneck width
    depth: int = 2
    num_heads: int = 8
    dropout: float = 0.1  # on the cross-attention weights (training only)

    @property
    def mlp_inner(self) -> int:
        return int(2 * 4 * self.width / 3)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    width: int = 512
    depth: int = 6
    num_heads: int = 8
    cond_width: int = 512
    time_dim: int = 256  # sinusoidal timestep features
    mlp_ratio: int = 4
    pooling: str = "mean"  # mean | attention
    align: bool = True  # identity-initialised linear map of the source states before pooling (the seed's "RoPE")
    train_steps: int = 2  # Euler steps when train_output == "sample"
    eval_steps: int = 4
    train_output: str = "x0_hat"  # x0_hat (x_t + v (1 - t), the reference) | sample (Euler from noise)
    cfg_scale: float = 0.0  # classifier-free guidance at sampling; 0 = conditional velocity only
    cfg_dropout: float = 0.1  # condition dropped with this probability in training when cfg_scale > 0


@dataclasses.dataclass(frozen=True)
class TranslatorConfig:
    kind: str
    source_dim: int
    target_dim: int
    num_tokens: int = 64  # K
    target_rms: float = 1.0  # RMS of the target's embedding table
    cross: CrossConfig = CrossConfig()
    dit: DiTConfig = DiTConfig()
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"translator.kind must be one of {KINDS}, got {self.kind!r}.")
        if self.cross.width % self.cross.num_heads or self.dit.width % self.dit.num_heads:
            raise ValueError("translator width must be a multiple of its num_heads.")
        if self.dit.pooling not in POOLINGS:
            raise ValueError(f"translator.dit.pooling must be one of {POOLINGS}, got {self.dit.pooling!r}.")
        if self.dit.train_output not in ("x0_hat", "sample"):
            raise ValueError("translator.dit.train_output must be 'x0_hat' or 'sample'.")


def table_rms(embedding: Any) -> float:
    """RMS over all entries of an embedding table (the RMS-matching target)."""
    e = jnp.asarray(embedding, jnp.float32)
    return float(jnp.sqrt(jnp.mean(e * e)))


def rms_match(x: Array, target_rms: float, clamp: tuple = RMS_CLAMP, eps: float = 1e-8) -> Array:
    """Rescale each token [..., D] so its RMS is `target_rms`; the factor target/rms is computed without gradient
    and clamped to `clamp` (so a token far off scale is moved by at most 4x)."""
    xf = x.astype(jnp.float32)
    rms = jnp.sqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    scale = jax.lax.stop_gradient(jnp.clip(target_rms / rms, clamp[0], clamp[1]))
    return (xf * scale).astype(x.dtype)


def _p(init, names):
    return nn.with_logical_partitioning(init, tuple(names))


def _dense(features: int, names: tuple, dtype, name: str, kernel_init=None, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=_p(kernel_init or nn.initializers.xavier_uniform(), names),
                    bias_init=_p(nn.initializers.zeros_init(), names[-1:]), name=name)


def _identity_init(key, shape, dtype=jnp.float32):
    del key
    return jnp.eye(shape[0], shape[1], dtype=dtype)


class MHA(nn.Module):
    """Multi-head attention (q from x, k/v from kv), key padding mask, optional dropout on the weights."""

    width: int
    num_heads: int
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, kv: Array, key_mask: Optional[Array] = None, deterministic: bool = True) -> Array:
        w, h = self.width, self.num_heads
        hd = w // h
        q = _dense(w, ("bridge_width", "bridge_heads"), self.dtype, "query")(x)
        k = _dense(w, ("bridge_in", "bridge_heads"), self.dtype, "key")(kv)
        v = _dense(w, ("bridge_in", "bridge_heads"), self.dtype, "value")(kv)
        b, tq, tk = x.shape[0], x.shape[1], kv.shape[1]
        q, k, v = q.reshape(b, tq, h, hd), k.reshape(b, tk, h, hd), v.reshape(b, tk, h, hd)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(hd)
        if key_mask is not None:
            logits = jnp.where(key_mask.astype(bool)[:, None, None, :], logits, -1e30)
        weights = jax.nn.softmax(logits, axis=-1)
        if self.dropout > 0 and not deterministic:
            weights = nn.Dropout(self.dropout)(weights, deterministic=False)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).reshape(b, tq, w)
        return _dense(w, ("bridge_heads", "bridge_width"), self.dtype, "out")(out)


class SwiGLU(nn.Module):
    inner: int
    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        gate = _dense(self.inner, ("bridge_width", "bridge_mlp"), self.dtype, "gate")(x)
        up = _dense(self.inner, ("bridge_width", "bridge_mlp"), self.dtype, "up")(x)
        return _dense(self.width, ("bridge_mlp", "bridge_width"), self.dtype, "down")(nn.silu(gate) * up)


def _gate(module: nn.Module, name: str) -> Array:
    return jnp.tanh(module.param(name, _p(nn.initializers.zeros_init(), ("scalar",)), (1,), jnp.float32))


class GatedBlock(nn.Module):
    cfg: CrossConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, src: Array, src_mask: Array, deterministic: bool) -> Array:
        c, dt = self.cfg, self.dtype
        y = RMSNorm(NORM_EPS, name="self_norm")(x)
        x = x + _gate(self, "self_gate").astype(dt) * MHA(c.width, c.num_heads, dt, name="self_attn")(y, y)
        q = RMSNorm(NORM_EPS, name="cross_norm_q")(x)
        kv = RMSNorm(NORM_EPS, name="cross_norm_kv")(src)
        x = x + _gate(self, "cross_gate").astype(dt) * MHA(c.width, c.num_heads, dt, c.dropout, name="cross_attn")(
            q, kv, src_mask, deterministic)
        y = RMSNorm(NORM_EPS, name="mlp_norm")(x)
        return x + _gate(self, "mlp_gate").astype(dt) * SwiGLU(c.mlp_inner, c.width, dt, name="mlp")(y)


class CrossTranslator(nn.Module):
    """Source states [B, T, Ds] (+ mask [B, T]) -> soft tokens [B, K, Dt] (RMS-matched)."""

    cfg: TranslatorConfig

    @nn.compact
    def __call__(self, src: Array, src_mask: Array, deterministic: bool = True) -> Array:
        cfg, c = self.cfg, self.cfg.cross
        dt = jnp.dtype(cfg.dtype)
        queries = self.param("queries", _p(nn.initializers.orthogonal(), ("bridge_latents", "bridge_width")),
                             (cfg.num_tokens, c.width), jnp.float32)
        x = jnp.broadcast_to(queries.astype(dt), (src.shape[0],) + queries.shape)
        src = src.astype(dt)
        for i in range(c.depth):
            x = GatedBlock(c, dt, name=f"block_{i}")(x, src, src_mask, deterministic)
        x = RMSNorm(NORM_EPS, name="out_norm")(x)
        x = _dense(cfg.target_dim, ("bridge_width", "bridge_out"), dt, "out_proj")(x)
        return rms_match(x, cfg.target_rms)


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0) -> Array:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 as in DiT): [B] -> [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * 1000.0)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
    return x * (1 + scale[:, None]) + shift[:, None]


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, name=name)


class AdaLNZeroBlock(nn.Module):
    cfg: DiTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, c: Array) -> Array:
        d = self.cfg
        mod = _dense(6 * d.width, (None, "bridge_width"), self.dtype, "adaLN",
                     kernel_init=nn.initializers.zeros_init())(nn.silu(c))
        sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
        y = _modulate(_layer_norm("norm1")(x), sh1, sc1)
        x = x + g1[:, None] * MHA(d.width, d.num_heads, self.dtype, name="attn")(y, y)
        y = _modulate(_layer_norm("norm2")(x), sh2, sc2)
        y = _dense(d.mlp_ratio * d.width, ("bridge_width", "bridge_mlp"), self.dtype, "mlp_up")(y)
        y = _dense(d.width, ("bridge_mlp", "bridge_width"), self.dtype, "mlp_down")(nn.gelu(y, approximate=True))
        return x + g2[:, None] * y


class DiTTranslator(nn.Module):
    """Rectified-flow DiT. `condition(src, mask, drop)` -> [B, C]; `velocity(x_t, t, cond)` -> [B, K, Dt];
    `__call__` = velocity(x_t, t, condition(src, mask)) (used for init)."""

    cfg: TranslatorConfig

    def setup(self):
        cfg, d = self.cfg, self.cfg.dit
        dt = jnp.dtype(cfg.dtype)
        if d.align:
            self.align = _dense(cfg.source_dim, (None, "bridge_in"), dt, "align", kernel_init=_identity_init)
        if d.pooling == "attention":
            self.pool_query = self.param("pool_query", _p(nn.initializers.normal(0.02), ("bridge_in",)),
                                         (cfg.source_dim,), jnp.float32)
        self.cond_in = _dense(d.cond_width, ("bridge_in", "bridge_width"), dt, "cond_in")
        self.cond_out = _dense(d.cond_width, (None, "bridge_width"), dt, "cond_out")
        self.null_cond = self.param("null_cond", _p(nn.initializers.zeros_init(), ("bridge_width",)),
                                    (d.cond_width,), jnp.float32)
        self.time_in = _dense(d.cond_width, (None, "bridge_width"), dt, "time_in")
        self.time_out = _dense(d.cond_width, (None, "bridge_width"), dt, "time_out")
        self.in_proj = _dense(d.width, ("bridge_out", "bridge_width"), dt, "in_proj")
        self.pos = self.param("pos", _p(nn.initializers.normal(0.02), ("bridge_latents", "bridge_width")),
                              (cfg.num_tokens, d.width), jnp.float32)
        self.blocks = [AdaLNZeroBlock(d, dt, name=f"block_{i}") for i in range(d.depth)]
        self.final_mod = _dense(2 * d.width, (None, "bridge_width"), dt, "final_adaLN",
                                kernel_init=nn.initializers.zeros_init())
        self.final_norm = _layer_norm("final_norm")
        self.out_proj = _dense(cfg.target_dim, ("bridge_width", "bridge_out"), dt, "out_proj",
                               kernel_init=nn.initializers.zeros_init())

    def condition(self, src: Array, src_mask: Array, drop: Optional[Array] = None) -> Array:
        """Pooled source conditioning [B, C]; rows with drop[b] get the learned null condition (CFG)."""
        h = src.astype(jnp.dtype(self.cfg.dtype))
        if self.cfg.dit.align:
            h = self.align(h)
        m = src_mask.astype(jnp.float32)
        if self.cfg.dit.pooling == "mean":
            pooled = jnp.sum(h * m[..., None], axis=1) / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)
        else:
            scores = jnp.einsum("btd,d->bt", h.astype(jnp.float32), self.pool_query) / math.sqrt(h.shape[-1])
            w = jax.nn.softmax(jnp.where(m > 0, scores, -1e30), axis=-1)
            pooled = jnp.einsum("bt,btd->bd", w, h.astype(jnp.float32)).astype(h.dtype)
        cond = self.cond_out(nn.silu(self.cond_in(pooled)))
        if drop is not None:
            cond = jnp.where(drop[:, None], self.null_cond.astype(cond.dtype), cond)
        return cond

    def velocity(self, x_t: Array, t: Array, cond: Array) -> Array:
        temb = self.time_out(nn.silu(self.time_in(timestep_embedding(t, self.cfg.dit.time_dim))))
        c = cond + temb.astype(cond.dtype)
        x = self.in_proj(x_t.astype(jnp.dtype(self.cfg.dtype))) + self.pos.astype(cond.dtype)[None]
        for block in self.blocks:
            x = block(x, c)
        shift, scale = jnp.split(self.final_mod(nn.silu(c)), 2, axis=-1)
        return self.out_proj(_modulate(self.final_norm(x), shift, scale))

    def __call__(self, x_t: Array, t: Array, src: Array, src_mask: Array) -> Array:
        return self.velocity(x_t, t, self.condition(src, src_mask))


def euler_sample(velocity_fn: Callable[[Array, Array], Array], x0: Array, steps: int) -> Array:
    """Integrate dx/dt = v(x, t) from t = 0 (x0, the noise) to t = 1 with `steps` Euler steps; t is passed as
    [B]. A velocity constant along straight lines (rectified flow with the exact field) is integrated exactly."""
    if steps < 1:
        raise ValueError(f"Euler sampling needs at least one step, got {steps}.")
    x, dt = x0, 1.0 / steps
    for i in range(steps):
        t = jnp.full((x0.shape[0],), i * dt, jnp.float32)
        x = x + dt * velocity_fn(x, t).astype(x.dtype)
    return x


def guided(velocity_fn: Callable, cond: Array, null: Array, scale: float) -> Callable[[Array, Array], Array]:
    """The classifier-free-guided field v_c + scale * (v_c - v_null) (scale 0: the conditional field)."""
    if scale == 0:
        return lambda x, t: velocity_fn(x, t, cond)
    return lambda x, t: (1 + scale) * velocity_fn(x, t, cond) - scale * velocity_fn(x, t, null)


def module_for(cfg: TranslatorConfig) -> nn.Module:
    return CrossTranslator(cfg) if cfg.kind == "cross" else DiTTranslator(cfg)


def init_translator(cfg: TranslatorConfig, rng: Array) -> dict:
    """Boxed (logically named) translator variables {"params": ...}."""
    src = jnp.zeros((1, 2, cfg.source_dim), jnp.float32)
    mask = jnp.ones((1, 2), bool)
    if cfg.kind == "cross":
        return dict(CrossTranslator(cfg).init(rng, src, mask))
    x = jnp.zeros((1, cfg.num_tokens, cfg.target_dim), jnp.float32)
    return dict(DiTTranslator(cfg).init(rng, x, jnp.zeros((1,), jnp.float32), src, mask))


__all__ = ["CrossConfig", "CrossTranslator", "DiTConfig", "DiTTranslator", "KINDS", "TranslatorConfig",
           "euler_sample", "guided", "init_translator", "module_for", "rms_match", "table_rms",
           "timestep_embedding"]
