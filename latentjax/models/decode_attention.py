"""Single-query attention over a layer's KV cache as one Pallas (Triton) kernel per (row, kv head).

A decode step's attention through XLA is two batched dots over every slot of the cache plus the softmax between
them. This kernel reads the keys and values of the filled slots only (the cache's write index bounds the loop), in
the cache's own [batch, slots, kv_heads, head_dim] layout, and keeps the scores, the mask and an online softmax in
registers. The queries of one kv head (its `group` heads, padded to the 16 rows a tensor-core dot needs) share one
read of that head's keys. Off a GPU the kernel runs in Pallas' interpreter (tests).

jax ships a Pallas decode kernel (`jax.experimental.pallas.ops.gpu.decode_attention.gqa`), but it swaps the cache to
[batch, kv_heads, slots, head_dim] (a copy of every layer's cache on every step), takes one contiguous range of
keys per row rather than a mask, and needs the slot count divisible by its splits.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

BLOCK_SLOTS = 64  # slots per loop step: 64 x head_dim keys and values per kv head in flight


def _kernel(q_ref, k_ref, v_ref, allowed_ref, filled_ref, o_ref, *, slots: int, scale: float):
    q = q_ref[...]  # [rows, head_dim]: this kv head's queries, zero rows below its group
    rows, head_dim = q.shape
    filled = jnp.minimum(filled_ref[()], slots)

    def body(block, carry):
        acc, best, total = carry
        idx = block * BLOCK_SLOTS + jnp.arange(BLOCK_SLOTS)
        inside = idx < filled  # the empty slots of the last block are never read
        cut = pl.ds(block * BLOCK_SLOTS, BLOCK_SLOTS)
        k = plgpu.load(k_ref.at[cut, :], mask=inside[:, None], other=0)
        ok = plgpu.load(allowed_ref.at[cut], mask=inside, other=0) != 0
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * scale  # [rows, BLOCK_SLOTS]
        s = jnp.where(ok[None, :], s, -jnp.inf)
        new_best = jnp.maximum(best, jnp.max(s, axis=1))
        # rows that have seen no allowed key yet keep best = -inf; shifting by 0 there keeps exp finite
        shift = jnp.where(new_best == -jnp.inf, 0.0, new_best)
        p = jnp.exp(s - shift[:, None])  # 0 at the masked keys (s = -inf, shift finite)
        fade = jnp.exp(best - shift)
        v = plgpu.load(v_ref.at[cut, :], mask=inside[:, None], other=0)
        acc = acc * fade[:, None] + plgpu.dot(p.astype(v.dtype), v).astype(jnp.float32)
        return acc, new_best, total * fade + jnp.sum(p, axis=1)

    init = (jnp.zeros((rows, head_dim), jnp.float32), jnp.full((rows,), -jnp.inf, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    blocks = pl.cdiv(filled, BLOCK_SLOTS)
    acc, _, total = jax.lax.fori_loop(0, blocks, body, init)
    # a row with no allowed key returns zeros (XLA's attention would average every value; decode rows always
    # allow their own key)
    o_ref[...] = (acc / jnp.maximum(total, 1e-30)[:, None]).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("interpret",))
def decode_attention(q, k, v, allowed, filled, *, interpret: bool = False):
    """Softmax attention of one query position over a KV cache.

    q: [batch, 1, heads, head_dim]; k, v: [batch, slots, kv_heads, head_dim] (head h reads kv head
    h // (heads // kv_heads)); allowed: [batch, slots] bool, the keys each row may attend to; filled: int32 scalar,
    every slot at or after it is empty for every row (never read). Scale 1/sqrt(head_dim). Returns
    [batch, 1, heads, head_dim] in q's dtype.
    """
    batch, t, heads, head_dim = q.shape
    slots, kv_heads = k.shape[1], k.shape[2]
    if t != 1 or heads % kv_heads:
        raise ValueError(f"decode_attention takes one query position and heads divisible by kv heads; got "
                         f"q {q.shape} and k {k.shape}.")
    group = heads // kv_heads
    rows = max(16, 1 << (group - 1).bit_length())
    qg = jnp.pad(q.reshape(batch, kv_heads, group, head_dim), ((0, 0), (0, 0), (0, rows - group), (0, 0)))
    out = pl.pallas_call(
        functools.partial(_kernel, slots=slots, scale=1.0 / math.sqrt(head_dim)),
        grid=(batch, kv_heads),
        in_specs=[
            pl.BlockSpec((None, None, rows, head_dim), lambda b, h: (b, h, 0, 0)),
            pl.BlockSpec((None, slots, None, head_dim), lambda b, h: (b, 0, h, 0)),
            pl.BlockSpec((None, slots, None, head_dim), lambda b, h: (b, 0, h, 0)),
            pl.BlockSpec((None, slots), lambda b, h: (b, 0)),
            pl.BlockSpec((), lambda b, h: ()),
        ],
        out_specs=pl.BlockSpec((None, None, rows, head_dim), lambda b, h: (b, h, 0, 0)),
        out_shape=jax.ShapeDtypeStruct((batch, kv_heads, rows, head_dim), q.dtype),
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="decode_attention",
    )(qg, k, v, allowed.astype(jnp.int32), jnp.asarray(filled, jnp.int32))
    return out[:, :, :group].reshape(batch, 1, heads, head_dim)
