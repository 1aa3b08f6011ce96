"""Single-query attention over a layer's KV cache as one Pallas (Triton) kernel.

A decode step's attention through XLA is two batched dots over every slot of the cache plus the softmax between
them. This kernel reads the keys and values of the filled slots only (the cache's write index bounds the loop), in
the cache's own [batch, slots, kv_heads, head_dim] layout, and keeps the scores, the mask and an online softmax in
registers. The queries of one kv head (its `group` heads, padded to the 16 rows a tensor-core dot needs) share one
read of that head's keys. One program runs per (row, kv head, range of slots): at a small batch each (row, kv head)
is split over several ranges, merged after, so that a long cache streams through every multiprocessor rather than
through batch x kv_heads of them. Off a GPU the kernel runs in Pallas' interpreter (tests).

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
TARGET_PROGRAMS = 128  # about one program per streaming multiprocessor (132 on an H100 or H200)
NUM_WARPS, NUM_STAGES = 4, 2  # Triton's launch options (`benchmarks/decode_kernel_sweep.py` times others)
# Off until timed on a GPU (session 14's b64 profile: the pad of q, fused with its RoPE, 3.0 us a layer and step, and
# a 2.1-us slice kernel, likely the output's, before the o projection's GEMM; the sweep times both forms).
MASKED_ROWS = False


def slot_splits(batch: int, kv_heads: int, slots: int, block_slots: int = BLOCK_SLOTS) -> int:
    """How many ranges of slots each (row, kv head) is split over so that the grid fills the GPU: one at a large
    batch (b64 x 8 kv heads is already 512 programs), up to 16 at batch 1 (8 programs would leave most of an H100
    idle while a long cache streams through them)."""
    want = -(-TARGET_PROGRAMS // (batch * kv_heads))
    return max(1, min(want, -(-slots // block_slots)))


def _kernel(q_ref, k_ref, v_ref, allowed_ref, filled_ref, *out_refs, slots: int, scale: float, span: int,
            block: int, rows: int, group: int, masked: bool):
    """One (row, kv head, slot range): an online softmax over the range's filled blocks. With one range the output
    is normalised here; with several, the partial sums and running maxima go out for `_combine`. When q holds only
    the `group` real query rows (fewer than the dot's `rows`), they are read and the output written under a mask."""
    real = (jnp.arange(rows) < group)[:, None] if masked else None
    if masked:  # q's block reaches past this kv head's `group` query rows: read those only
        q = plgpu.load(q_ref.at[pl.ds(0, rows), :], mask=real, other=0)
    else:  # padded outside: zero rows below the group
        q = q_ref[...]
    head_dim = q.shape[1]
    filled = jnp.minimum(filled_ref[()], slots)
    first = pl.program_id(2) * span  # in blocks
    last = jnp.minimum(first + span, pl.cdiv(filled, block))

    def body(i, carry):
        acc, best, total = carry
        idx = i * block + jnp.arange(block)
        inside = idx < filled  # the empty slots of the last block are never read
        cut = pl.ds(i * block, block)
        k = plgpu.load(k_ref.at[cut, :], mask=inside[:, None], other=0)
        ok = plgpu.load(allowed_ref.at[cut], mask=inside, other=0) != 0
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * scale  # [rows, block]
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
    acc, best, total = jax.lax.fori_loop(first, last, body, init)
    if len(out_refs) == 1:
        # a row with no allowed key returns zeros (XLA's attention would average every value; decode rows always
        # allow their own key)
        out = (acc / jnp.maximum(total, 1e-30)[:, None]).astype(out_refs[0].dtype)
        if masked:
            plgpu.store(out_refs[0].at[pl.ds(0, rows), :], out, mask=real)
        else:
            out_refs[0][...] = out
    else:
        acc_ref, best_ref, total_ref = out_refs
        acc_ref[...], best_ref[...], total_ref[...] = acc, best, total


def _combine(acc, best, total):
    """Merges the slot ranges' partial softmaxes (axis 2): each range's sums rescaled to the overall maximum."""
    top = jnp.max(best, axis=2, keepdims=True)
    weight = jnp.exp(best - jnp.where(top == -jnp.inf, 0.0, top))  # 0 for a range that saw no allowed key
    num = jnp.sum(acc * weight[..., None], axis=2)
    return num / jnp.maximum(jnp.sum(total * weight, axis=2), 1e-30)[..., None]


@functools.partial(jax.jit, static_argnames=("interpret", "splits", "block_slots", "num_warps", "num_stages",
                                             "masked_rows"))
def decode_attention(q, k, v, allowed, filled, *, interpret: bool = False, splits: int | None = None,
                     block_slots: int = BLOCK_SLOTS, num_warps: int = NUM_WARPS, num_stages: int = NUM_STAGES,
                     masked_rows: bool | None = None):
    """Softmax attention of one query position over a KV cache.

    q: [batch, 1, heads, head_dim]; k, v: [batch, slots, kv_heads, head_dim] (head h reads kv head
    h // (heads // kv_heads)); allowed: [batch, slots] bool, the keys each row may attend to; filled: int32 scalar,
    every slot at or after it is empty for every row (never read). Scale 1/sqrt(head_dim). `splits` ranges of
    slots per (row, kv head) run as separate programs and are merged after (default `slot_splits`);
    `block_slots` slots (a power of two, at least 16) are read per loop step. A kv head's queries take the 16 rows
    a tensor-core dot needs: `masked_rows` reads the real ones and writes their outputs under a mask, else q is
    padded before the call and the output sliced after it (two more kernels in a decode step, ~5 us at b64);
    None: MASKED_ROWS.
    Returns [batch, 1, heads, head_dim] in q's dtype.
    """
    batch, t, heads, head_dim = q.shape
    slots, kv_heads = k.shape[1], k.shape[2]
    if t != 1 or heads % kv_heads:
        raise ValueError(f"decode_attention takes one query position and heads divisible by kv heads; got "
                         f"q {q.shape} and k {k.shape}.")
    group = heads // kv_heads
    rows = max(16, 1 << (group - 1).bit_length())
    if block_slots < 16 or block_slots & (block_slots - 1):
        raise ValueError(f"block_slots must be a power of two of at least 16 (a tensor-core dot's tile); got "
                         f"{block_slots}.")
    blocks = -(-slots // block_slots)
    splits = min(splits or slot_splits(batch, kv_heads, slots, block_slots), blocks)
    span = -(-blocks // splits)
    splits = -(-blocks // span)  # no range left empty by the rounding
    masked = (MASKED_ROWS if masked_rows is None else masked_rows) and rows > group
    qg = q.reshape(batch, kv_heads, group, head_dim)
    if rows > group and not masked:
        qg = jnp.pad(qg, ((0, 0), (0, 0), (0, rows - group), (0, 0)))

    def cell(*shape):  # one program's own slice of a [batch, kv_heads, splits, *shape] output
        return pl.BlockSpec((None, None, None) + shape, lambda b, h, s: (b, h, s) + (0,) * len(shape))

    if splits == 1:
        out_specs = pl.BlockSpec((None, None, rows, head_dim), lambda b, h, s: (b, h, 0, 0))
        out_shape = jax.ShapeDtypeStruct((batch, kv_heads, group if masked else rows, head_dim), q.dtype)
    else:
        out_specs = [cell(rows, head_dim), cell(rows), cell(rows)]
        part = (batch, kv_heads, splits, rows)
        out_shape = [jax.ShapeDtypeStruct(part + (head_dim,), jnp.float32), jax.ShapeDtypeStruct(part, jnp.float32),
                     jax.ShapeDtypeStruct(part, jnp.float32)]
    out = pl.pallas_call(
        functools.partial(_kernel, slots=slots, scale=1.0 / math.sqrt(head_dim), span=span, block=block_slots,
                          rows=rows, group=group, masked=masked),
        grid=(batch, kv_heads, splits),
        in_specs=[
            pl.BlockSpec((None, None, rows, head_dim), lambda b, h, s: (b, h, 0, 0)),
            pl.BlockSpec((None, slots, None, head_dim), lambda b, h, s: (b, 0, h, 0)),
            pl.BlockSpec((None, slots, None, head_dim), lambda b, h, s: (b, 0, h, 0)),
            pl.BlockSpec((None, slots), lambda b, h, s: (b, 0)),
            pl.BlockSpec((), lambda b, h, s: ()),
        ],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="decode_attention",
    )(qg, k, v, allowed.astype(jnp.int32), jnp.asarray(filled, jnp.int32))
    if splits > 1:
        out = _combine(*out).astype(q.dtype)
    return out[:, :, :group].reshape(batch, 1, heads, head_dim)
