"""The translator's loss terms as pure functions of arrays (each weighted and logged separately by the forward).

  masked_kl          KL(p || q) of next-token distributions, mean over masked positions (the `kl` and
                     `rope_alignment` terms)
  first_n_mask       the first n positions of a mask per row (`kl` on the first kl_tokens answer positions)
  masked_mse         mean squared error over masked tokens (prompt alignment, token alignment, flow loss)
  masked_mean_pool   mean over masked tokens
  info_nce           InfoNCE with the other rows as negatives (`info_nce`: soft -> prompt, `prompt_contrast`:
                     prompt -> soft)
  format_surrogate   differentiable: 1 - max over the answer span of p('####' token), mean over rows
  format_monitor     the reference's (non-differentiable) rate of rows whose argmax over the answer span lacks it
  flow_loss          rectified-flow velocity MSE
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def masked_kl(p_logits: Array, q_logits: Array, mask: Array) -> Array:
    """Mean over positions with mask 1 of KL(softmax(p) || softmax(q)) (0 if the mask is empty)."""
    lp = jax.nn.log_softmax(_f32(p_logits), axis=-1)
    lq = jax.nn.log_softmax(_f32(q_logits), axis=-1)
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    m = _f32(mask)
    return jnp.sum(kl * m) / jnp.maximum(jnp.sum(m), 1.0)


def first_n_mask(mask: Array, n: int) -> Array:
    """Keep the first n ones of each row of a 0/1 mask [B, T]."""
    m = jnp.asarray(mask, jnp.int32)
    return m * (jnp.cumsum(m, axis=1) <= n)


def masked_mse(a: Array, b: Array, mask: Array) -> Array:
    """Mean over masked tokens of the per-token mean squared error: a, b [B, T, D], mask [B, T]."""
    per_token = jnp.mean(jnp.square(_f32(a) - _f32(b)), axis=-1)
    m = _f32(mask)
    return jnp.sum(per_token * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_mean_pool(x: Array, mask: Array) -> Array:
    m = _f32(mask)[..., None]
    return jnp.sum(_f32(x) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def info_nce(queries: Array, keys: Array, temperature: float = 0.07) -> Array:
    """InfoNCE of queries [B, D] against keys [B, D]: cosine similarities / temperature, row i's positive is key i,
    the other rows are negatives; mean cross-entropy (0 for B == 1)."""
    if queries.shape[0] < 2:
        return jnp.zeros((), jnp.float32)
    q = _f32(queries) / jnp.maximum(jnp.linalg.norm(_f32(queries), axis=-1, keepdims=True), 1e-8)
    k = _f32(keys) / jnp.maximum(jnp.linalg.norm(_f32(keys), axis=-1, keepdims=True), 1e-8)
    logits = q @ k.T / temperature
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def format_surrogate(logits: Array, mask: Array, token_id: int) -> Array:
    """1 - max over masked positions of p(token_id), averaged over rows that have masked positions."""
    p = jax.nn.softmax(_f32(logits), axis=-1)[..., token_id]
    m = _f32(mask)
    best = jnp.max(jnp.where(m > 0, p, 0.0), axis=1)
    rows = (jnp.sum(m, axis=1) > 0).astype(jnp.float32)
    return jnp.sum((1.0 - best) * rows) / jnp.maximum(jnp.sum(rows), 1.0)


def format_monitor(logits: Array, mask: Array, token_id: int) -> Array:
    """Fraction of rows (with masked positions) whose argmax over the masked positions never is token_id."""
    hit = (jnp.argmax(logits, axis=-1) == token_id) & (jnp.asarray(mask) > 0)
    rows = (jnp.sum(_f32(mask), axis=1) > 0).astype(jnp.float32)
    miss = (~jnp.any(hit, axis=1)).astype(jnp.float32)
    return jnp.sum(miss * rows) / jnp.maximum(jnp.sum(rows), 1.0)


def flow_loss(v_pred: Array, x1: Array, z: Array, mask: Array) -> Array:
    """Rectified flow: MSE between the predicted velocity and x1 - z over masked tokens."""
    return masked_mse(v_pred, _f32(x1) - _f32(z), mask)


__all__ = ["first_n_mask", "flow_loss", "format_monitor", "format_surrogate", "info_nce", "masked_kl",
           "masked_mean_pool", "masked_mse"]
