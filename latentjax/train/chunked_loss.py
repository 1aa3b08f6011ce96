"""Next-token cross-entropy from the decoder's final hidden states, a chunk of positions at a time.

`latentjax.lora.sft.token_losses` takes float32 logits [B, T, V]; on a 128k vocabulary at 4 x 512 tokens those are
1 GiB, with as much again for their gradient and the softmax temporaries. `chunked_token_losses` computes the same
(loss sum, target count, correct-argmax count) from the normed hidden states [B, T, D] (`DecoderOutput.hidden`
with `return_logits=False`) and the LM-head weight: a `jax.lax.scan` over chunks of `chunk` sequence positions whose
body holds one chunk's [B, chunk, V] float32 logits at a time, in the forward and in the backward. Two backward
modes, equal in memory (one chunk's logits and their gradient at a time):

  "recompute": the body is `jax.checkpoint`ed and the backward recomputes each chunk's logits (one more head
      matmul per step than the full-logits path); plain autodiff, so the head may be trained too.
  "fused": the forward scan also takes each chunk's gradient w.r.t. its hidden states (a `jax.custom_vjp`), kept
      as a [B, T, D] residual in the hidden dtype; the backward only scales it. As many head matmuls as the
      full-logits path. The head is a closed-over constant: differentiating w.r.t. it raises an error.

The decoder is not involved: the head product is written here as the decoder writes it (in the compute dtype, then
float32, constrained to ("batch", "length", "act_vocab")).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from latentjax.models.config import DecoderConfig
from latentjax.parallel import rules as rules_lib


def head_weight(params: Any, config: DecoderConfig) -> tuple[jax.Array, int]:
    """(weight, index of its embed axis): `lm_head/kernel` [D, V] -> 0, or the tied `embed_tokens/embedding`
    [V, D] -> 1 when `config.tie_word_embeddings` (no transposed copy is made)."""
    params = rules_lib.unbox(params)
    if config.tie_word_embeddings:
        return params["embed_tokens"]["embedding"], 1
    if "lm_head" not in params:
        raise ValueError("The config has untied embeddings but the params have no lm_head; "
                         "set tie_word_embeddings=True or pass the full decoder params.")
    return params["lm_head"]["kernel"], 0


def head_logits(hidden: jax.Array, weight: jax.Array, embed_axis: int) -> jax.Array:
    """[..., D] x weight -> float32 [..., V], the product in the dtypes given (the decoder's own head)."""
    dims = (((hidden.ndim - 1,), (embed_axis,)), ((), ()))
    logits = jax.lax.dot_general(hidden, weight, dims)
    return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "act_vocab"))


def _chunk_sums(hidden, labels, weight, head, embed_axis):
    """Summed CE and correct count of one chunk: hidden [B, C, D], labels [B, C], weight [B, C] float32."""
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_embed"))
    logits = head_logits(hidden, head, embed_axis)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(ce * weight), jnp.sum(correct * weight)


BACKWARDS = ("recompute", "fused")


def _recompute_sums(xs, head, embed_axis):
    sums = jax.checkpoint(_chunk_sums, static_argnums=(4,), prevent_cse=False)  # in a scan CSE is harmless

    def body(carry, x):
        ce, correct = sums(*x, head, embed_axis)
        return (carry[0] + ce, carry[1] + correct), None

    zero = jnp.zeros((), jnp.float32)
    return jax.lax.scan(body, (zero, zero), xs)[0]


def _fused_sums(xs, head, embed_axis):
    def scan(hs, ys, ws, with_grad):
        def body(carry, x):
            if with_grad:
                (ce, correct), dh = jax.value_and_grad(_chunk_sums, has_aux=True)(*x, head, embed_axis)
            else:
                (ce, correct), dh = _chunk_sums(*x, head, embed_axis), None
            return (carry[0] + ce, carry[1] + correct), dh

        zero = jnp.zeros((), jnp.float32)
        return jax.lax.scan(body, (zero, zero), (hs, ys, ws))

    @jax.custom_vjp
    def sums(hs, ys, ws):
        return scan(hs, ys, ws, False)[0]

    def fwd(hs, ys, ws):
        return scan(hs, ys, ws, True)

    def bwd(dhs, g):  # d(total)/d(hidden) was taken with cotangent 1; `correct` has no gradient
        return (dhs.astype(jnp.float32) * g[0]).astype(dhs.dtype), None, None

    sums.defvjp(fwd, bwd)
    return sums(*xs)


def chunked_token_losses(hidden: jax.Array, head: jax.Array, input_ids: jax.Array, loss_mask: jax.Array,
                         attention_mask: Optional[jax.Array] = None, *, chunk: int, embed_axis: int = 0,
                         dtype: Optional[Any] = None,
                         backward: str = "recompute") -> tuple[jax.Array, jax.Array, jax.Array]:
    """`token_losses` (loss sum, target count, correct argmax count) without the full [B, T, V] logits.

    hidden: [B, T, D] final-normed hidden states; head: the LM-head weight with its embed axis at `embed_axis`
    (see `head_weight`); `chunk` sequence positions per scan step (T need not divide by it: the tail is padded
    with positions of zero weight). Position t predicts token t + 1, which counts iff loss_mask[t + 1] (and
    attention_mask[t + 1]). `dtype` is the head product's dtype (the decoder's compute dtype; default hidden's).
    `backward`: "recompute" or "fused" (module docstring; "fused" when the head is frozen, as in LoRA).
    """
    if chunk < 1:
        raise ValueError(f"chunked_token_losses needs chunk >= 1 sequence positions, got {chunk}.")
    if backward not in BACKWARDS:
        raise ValueError(f"Unknown chunked-loss backward {backward!r}; use one of {BACKWARDS}.")
    b, t, d = hidden.shape
    if input_ids.shape != (b, t):
        raise ValueError(f"input_ids {input_ids.shape} do not match hidden states {hidden.shape}.")
    dtype = jnp.dtype(dtype or hidden.dtype)
    hidden, head = hidden.astype(dtype), head.astype(dtype)
    # Per position t: its target token t + 1 and that target's weight; the last position predicts nothing.
    labels = jnp.pad(input_ids[:, 1:].astype(jnp.int32), ((0, 0), (0, 1)))
    weight = loss_mask[:, 1:].astype(bool)
    if attention_mask is not None:
        weight &= attention_mask[:, 1:].astype(bool)
    weight = jnp.pad(weight.astype(jnp.float32), ((0, 0), (0, 1)))
    count = jnp.sum(weight)

    n = -(-t // chunk)
    pad = n * chunk - t
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        labels, weight = (jnp.pad(x, ((0, 0), (0, pad))) for x in (labels, weight))
    # [B, n * C, ...] -> [n, B, C, ...]: the scan walks chunks; every chunk keeps all rows (and their sharding).
    to_chunks = lambda x: jnp.swapaxes(x.reshape((b, n, chunk) + x.shape[2:]), 0, 1)
    xs = (to_chunks(hidden), to_chunks(labels), to_chunks(weight))
    total, correct = (_fused_sums if backward == "fused" else _recompute_sums)(xs, head, embed_axis)
    return total, count, correct


def decoder_token_losses(config: DecoderConfig, params: Any, hidden: jax.Array, input_ids: jax.Array,
                         loss_mask: jax.Array, attention_mask: Optional[jax.Array] = None, *,
                         chunk: int, backward: str = "recompute") -> tuple[jax.Array, jax.Array, jax.Array]:
    """`chunked_token_losses` with the head taken from decoder `params` (tied or not) in `config.dtype`."""
    head, embed_axis = head_weight(params, config)
    return chunked_token_losses(hidden, head, input_ids, loss_mask, attention_mask, chunk=chunk,
                                embed_axis=embed_axis, dtype=config.dtype, backward=backward)
