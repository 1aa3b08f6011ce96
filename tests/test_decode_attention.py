"""The Pallas decode-attention kernel (interpreted on the CPU) against XLA's attention, and generation through it."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentjax
from latentjax.inference.generate import generate
from latentjax.models.decode_attention import decode_attention
from tests.test_models import left_padded


def _xla(q, k, v, allowed):
    return jax.nn.dot_product_attention(q, k, v, mask=allowed[:, None, None, :], implementation="xla")


@pytest.mark.parametrize("slots,filled,kv_heads,group,splits", [
    (70, 67, 2, 4, 1), (128, 128, 2, 1, 1), (130, 97, 1, 3, 1),
    (130, 97, 1, 3, 3),  # the last range is past `filled`: it must add nothing
    (200, 150, 2, 2, 4),  # ranges of one block each; one row's allowed keys all in the first range
    (70, 67, 2, 4, None)])  # the default split for this small grid
@pytest.mark.parametrize("masked_rows", [False, True])
def test_kernel_equals_xla_attention_over_the_filled_slots(slots, filled, kv_heads, group, splits, masked_rows):
    rs = np.random.RandomState(slots)
    b, d = 4, 32
    q = jnp.asarray(rs.randn(b, 1, kv_heads * group, d), jnp.float32)
    k = rs.randn(b, slots, kv_heads, d).astype(np.float32)
    v = rs.randn(b, slots, kv_heads, d).astype(np.float32)
    allowed = np.zeros((b, slots), bool)
    allowed[0, 5:filled] = True  # left padding
    allowed[1, :filled] = True
    allowed[2, filled - 9:filled] = True  # a window
    allowed[2, 10] = True  # and one far key
    allowed[3, rs.rand(slots) < 0.3] = True  # holes anywhere
    allowed[3, filled:] = False
    allowed[3, filled - 1] = True
    if slots == 200:
        allowed[2] = False
        allowed[2, 3:20] = True
    ref = _xla(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(allowed))
    # slots at or after `filled` are empty for every row: the kernel must not read them
    k[:, filled:], v[:, filled:] = np.nan, np.nan
    out = decode_attention(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(allowed), filled, interpret=True,
                           splits=splits, masked_rows=masked_rows)
    assert out.shape == q.shape and out.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_slots,splits", [(16, 3), (32, None), (128, 1)])
def test_kernel_block_size_changes_nothing_but_speed(block_slots, splits):
    """Other slot blocks per loop step (the launch options a sweep times): the same attention; a block that is not
    a power of two of at least 16 is refused."""
    rs = np.random.RandomState(block_slots)
    q = jnp.asarray(rs.randn(3, 1, 8, 32), jnp.float32)
    k, v = (rs.randn(3, 100, 2, 32).astype(np.float32) for _ in range(2))
    allowed = np.arange(100)[None, :] >= np.array([[0], [40], [77]])
    allowed[:, 83:] = False
    ref = _xla(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(allowed))
    k[:, 83:], v[:, 83:] = np.nan, np.nan
    out = decode_attention(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(allowed), 83, interpret=True,
                           splits=splits, block_slots=block_slots)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="block_slots must be a power of two"):
        decode_attention(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(allowed), 83, interpret=True, block_slots=48)


def test_kernel_in_bf16_is_as_close_to_float32_as_xla():
    rs = np.random.RandomState(3)
    q, k, v = (rs.randn(*s).astype(np.float32) for s in [(2, 1, 8, 64), (2, 96, 2, 64), (2, 96, 2, 64)])
    allowed = jnp.asarray(np.arange(96)[None, :] >= np.array([[0], [30]]))
    exact = np.asarray(_xla(*(jnp.asarray(a) for a in (q, k, v)), allowed))
    half = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    ours = np.asarray(decode_attention(*half, allowed, 96, interpret=True), np.float32)
    xla = np.asarray(_xla(*half, allowed), np.float32)
    err = lambda a: np.max(np.abs(a - exact)) / np.max(np.abs(exact))  # noqa: E731
    assert err(ours) < 2e-2 and err(ours) < 2 * err(xla) + 1e-3


def test_slot_splits_fill_the_grid_at_small_batch_only():
    from latentjax.models.decode_attention import slot_splits
    assert slot_splits(64, 8, 1024) == 1  # 512 programs already
    assert slot_splits(1, 8, 1024) == 16  # 8 programs would leave most multiprocessors idle
    assert slot_splits(1, 8, 100) == 2  # never more ranges than blocks of slots


def test_kernel_refuses_several_query_positions():
    x = jnp.zeros((1, 2, 4, 16))
    with pytest.raises(ValueError, match="one query position"):
        decode_attention(x, x, x, jnp.ones((1, 2), bool), 2, interpret=True)


@pytest.mark.parametrize("variant,scan", [("llama31", False), ("mistral_window", True)])
def test_generation_through_the_kernel_equals_xla_attention(tiny_dirs, variant, scan):
    model = latentjax.from_pretrained(tiny_dirs[variant], scan_layers=scan)
    ids, mask = left_padded(np.random.RandomState(21), [5, 14, 9])
    run = lambda impl: generate(model.config.replace(attention_impl=impl), model.params, ids, mask,  # noqa: E731
                                max_new_tokens=12)
    np.testing.assert_array_equal(np.asarray(run("pallas").tokens), np.asarray(run("xla").tokens))
    # and the decode step's logits themselves
    from latentjax.models.decoder import Decoder, KVCache

    def step_logits(impl):
        cfg = model.config.replace(attention_impl=impl)
        cache = KVCache.zeros(cfg, ids.shape[0], ids.shape[1] + 3, jnp.float32)
        out = Decoder(cfg).apply({"params": model.params}, jnp.asarray(ids), jnp.asarray(mask), cache=cache)
        nxt = jnp.argmax(out.logits[:, -1], axis=-1)[:, None]
        return np.asarray(Decoder(cfg).apply({"params": model.params}, nxt, cache=out.cache).logits)

    np.testing.assert_allclose(step_logits("pallas"), step_logits("xla"), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the Triton-compiled kernel needs a GPU")
@pytest.mark.parametrize("batch,slots,filled,splits,masked_rows", [
    (1, 257, 200, None, False), (1, 257, 200, 1, False), (8, 192, 150, None, False), (64, 130, 130, None, False),
    (2, 4096, 3001, None, False), (64, 130, 130, None, True), (1, 257, 200, 1, True)])
def test_compiled_kernel_on_a_gpu_is_as_close_to_float32_as_xla(batch, slots, filled, splits, masked_rows):
    """The interpreter checks the algorithm; this checks Triton's lowering, at the 8B models' decode shapes."""
    rs = np.random.RandomState(batch + slots)
    q, k, v = (rs.randn(*s).astype(np.float32) for s in [(batch, 1, 32, 128), (batch, slots, 8, 128),
                                                          (batch, slots, 8, 128)])
    allowed = np.arange(slots)[None, :] >= rs.randint(0, filled // 2, (batch, 1))
    allowed[:, filled:] = False
    allowed[0, :filled] &= rs.rand(filled) < 0.5
    allowed[0, filled - 1] = True
    mask = jnp.asarray(allowed)[:, None, None, :]
    with jax.default_matmul_precision("highest"):  # a float32 reference without TF32
        exact = np.asarray(jax.nn.dot_product_attention(*(jnp.asarray(a) for a in (q, k, v)), mask=mask))
    half = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    holes = [h.at[:, filled:].set(jnp.nan) for h in half[1:]]  # the empty slots must never be read
    ours = np.asarray(decode_attention(half[0], *holes, jnp.asarray(allowed), filled, splits=splits,
                                       masked_rows=masked_rows), np.float32)
    xla = np.asarray(jax.nn.dot_product_attention(*half, mask=mask, implementation="xla"), np.float32)
    err = lambda a: np.max(np.abs(a - exact)) / np.max(np.abs(exact))  # noqa: E731
    assert np.isfinite(ours).all() and err(ours) < 2e-2 and err(ours) < 2 * err(xla) + 1e-3
