"""Next-token choice from logits: greedy, temperature, top-k and top-p, with explicit PRNG keys."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def sample(logits: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """logits [batch, vocab] (float32) -> token ids [batch]."""
    if cfg.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if cfg.top_p < 1.0:
        logits = _top_p_filter(logits, cfg.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Keep the smallest set of tokens whose probability mass reaches top_p (always at least the best one).

    Same tokens as the sort-based definition (`_top_p_filter_sorted`), found without sorting the vocabulary: the
    threshold is the smallest logit t with mass(logits > t) < top_p, located by bisection over the float32 values'
    order-preserving integer keys: 32 masked reductions over [batch, vocab] instead of a full sort per step. The
    passes are unrolled and each recomputes keys and probabilities from the logits instead of reading stored copies
    of both (H100, batch 64 x 128k vocabulary: 588 vs 595 ms for 64 sampled tokens with a fori_loop over stored
    arrays)."""
    m = jnp.max(logits, axis=-1, keepdims=True)
    z = jnp.sum(jnp.exp(logits - m), axis=-1, keepdims=True)
    keys = _ordered_keys(logits)
    lo = jnp.min(keys, axis=-1, keepdims=True)  # mass(> lo) may be >= top_p: the answer lies in [lo, hi]
    hi = jnp.max(keys, axis=-1, keepdims=True)  # mass(> hi) = 0 < top_p always
    for _ in range(32):
        mid = lo // 2 + hi // 2 + (lo % 2 + hi % 2) // 2  # floor((lo + hi) / 2) without int32 overflow
        mass = jnp.sum(jnp.where(_ordered_keys(logits) > mid, jnp.exp(logits - m) / z, 0.0), axis=-1, keepdims=True)
        ok = mass < top_p
        lo, hi = jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)
    # hi is now the smallest key with mass above it < top_p; keep every logit at or above it (ties kept, as in HF).
    return jnp.where(keys < hi, -jnp.inf, logits)


def _ordered_keys(x: jax.Array) -> jax.Array:
    """int32 keys that sort like the float32 values (negative floats have their magnitude bits flipped)."""
    x = jnp.where(x == 0, 0.0, x.astype(jnp.float32))  # -0.0 ties with +0.0
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _top_p_filter_sorted(logits: jax.Array, top_p: float) -> jax.Array:
    """The definition by sorting, kept as the reference `_top_p_filter` is tested against."""
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    # Threshold = smallest kept logit; ties at the threshold are kept, as in HF's implementation.
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)
