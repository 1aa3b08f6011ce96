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

    Same tokens as the sort-based definition (`_top_p_filter_sorted`), found without sorting the vocabulary: over
    the float32 logits' order-preserving integer keys, the threshold T is the smallest key with mass(keys > T) <
    top_p (equivalently the largest with mass(keys >= T) >= top_p). A GPU finds it by radix select (8 passes of 16
    bins: fewer passes over memory), a CPU by bisection (32 passes of one masked sum: less arithmetic). H100, batch
    64 x 128k vocabulary, 64 sampled tokens: 566 ms with the radix select, 588-595 ms with bisections; CPU, 64 x 49k
    logits: 192 ms vs 39 ms per call."""
    if jax.default_backend() == "gpu":
        return _top_p_radix(logits, top_p)
    return _top_p_bisection(logits, top_p)


def _top_p_bisection(logits: jax.Array, top_p: float) -> jax.Array:
    """T by bisection over the keys: the smallest key with mass above it < top_p, in [min key, max key]."""
    probs = jax.nn.softmax(logits, axis=-1)
    keys = _ordered_keys(logits)
    lo = jnp.min(keys, axis=-1, keepdims=True)  # mass(> lo) may be >= top_p: the answer lies in [lo, hi]
    hi = jnp.max(keys, axis=-1, keepdims=True)  # mass(> hi) = 0 < top_p always

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo // 2 + hi // 2 + (lo % 2 + hi % 2) // 2  # floor((lo + hi) / 2) without int32 overflow
        ok = jnp.sum(jnp.where(keys > mid, probs, 0.0), axis=-1, keepdims=True) < top_p
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    lo, hi = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return jnp.where(keys < hi, -jnp.inf, logits)  # keep every logit at or above T (ties kept, as in HF)


def _top_p_radix(logits: jax.Array, top_p: float) -> jax.Array:
    """T built 4 bits at a time from the top of the unsigned keys: among the keys that share T's bits so far, one
    pass sums the probability mass per next 4-bit digit, which gives mass(keys >= prefix | d << shift) for all 16
    digits at once."""
    probs = jax.lax.optimization_barrier(jax.nn.softmax(logits, axis=-1))  # read by each pass, computed once
    ukeys = jax.lax.bitcast_convert_type(_ordered_keys(logits), jnp.uint32) ^ jnp.uint32(0x80000000)
    prefix = jnp.zeros(logits.shape[:-1] + (1,), jnp.uint32)
    above = jnp.zeros(logits.shape[:-1] + (1,), jnp.float32)  # mass of keys above the prefix's range
    digits = jnp.arange(16, dtype=jnp.uint32)
    for shift in range(28, -4, -4):
        in_bin = ((ukeys >> shift) & jnp.uint32(15))[..., None] == digits  # [..., vocab, 16]
        if shift < 28:  # only keys that share the prefix's bits above this digit
            in_bin &= ((ukeys >> (shift + 4)) == (prefix >> (shift + 4)))[..., None]
        hist = jnp.sum(jnp.where(in_bin, probs[..., None], 0.0), axis=-2)  # [..., 16]
        at_least = above + jnp.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]  # mass(keys >= prefix | d << shift)
        # the largest such d; digit 0 always qualifies up to float rounding of the total mass
        best = jnp.maximum(jnp.sum(at_least >= top_p, axis=-1, keepdims=True), 1).astype(jnp.uint32) - 1
        prefix = prefix | (best << shift)
        above = above + jnp.sum(jnp.where(digits > best, hist, 0.0), axis=-1, keepdims=True)
    return jnp.where(ukeys < prefix, -jnp.inf, logits)


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
