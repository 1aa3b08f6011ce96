"""Translator modules: shapes, the zero tanh gates of `cross`, RMS matching, the DiT's zero init and the Euler
sampler (exact on constant / exact rectified-flow velocity fields), classifier-free guidance."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.models.decoder import RMSNorm
from latentjax.parallel import rules as rules_lib
from latentjax.translator.modules import (CrossConfig, CrossTranslator, DiTConfig, DiTTranslator, TranslatorConfig,
                                          euler_sample, guided, init_translator, rms_match, table_rms)

DS, DT, K = 24, 20, 5


def _cfg(kind, **kw):
    return TranslatorConfig(kind=kind, source_dim=DS, target_dim=DT, num_tokens=K, target_rms=0.05,
                            cross=CrossConfig(width=16, depth=2, num_heads=4, dropout=0.1),
                            dit=DiTConfig(width=16, depth=2, num_heads=4, cond_width=12, time_dim=8, **kw))


def _src(seed, b=3, t=7):
    src = jax.random.normal(jax.random.PRNGKey(seed), (b, t, DS))
    mask = jnp.ones((b, t), bool).at[0, :3].set(False)  # left padding on row 0
    return src, mask


def _params(variables):
    return rules_lib.unbox(variables)


def test_cross_shapes_rms_and_source_independence_at_init():
    cfg = _cfg("cross")
    v = _params(init_translator(cfg, jax.random.PRNGKey(0)))
    src_a, mask = _src(1)
    src_b, _ = _src(2)
    out_a = CrossTranslator(cfg).apply(v, src_a, mask)
    out_b = CrossTranslator(cfg).apply(v, src_b, mask)
    assert out_a.shape == (3, K, DT)
    # tanh(0) gates: every block is the identity on the queries, so the source does not matter ...
    np.testing.assert_allclose(out_a, out_b, atol=1e-6)
    # ... and the output is exactly out_proj(RMSNorm(queries)), RMS-matched.
    p = v["params"]
    q = RMSNorm(1e-6).apply({"params": p["out_norm"]}, p["queries"])
    y = q @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]
    rms_y = np.sqrt(np.mean(np.asarray(y) ** 2, axis=-1, keepdims=True) + 1e-8)
    factor = np.clip(0.05 / rms_y, 0.25, 4.0)
    np.testing.assert_allclose(out_a[0], y * factor, rtol=1e-4, atol=1e-6)
    # With the target RMS in reach of the clamp, every token's RMS is exactly the target.
    near = _cfg("cross").__class__(**{**_cfg("cross").__dict__, "target_rms": float(np.median(rms_y))})
    out = CrossTranslator(near).apply(v, src_a, mask)
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(out) ** 2, axis=-1)), near.target_rms, rtol=1e-4)
    # Orthogonal queries (K <= width: orthonormal rows).
    np.testing.assert_allclose(p["queries"] @ p["queries"].T, np.eye(K), atol=1e-5)


def test_cross_open_gates_read_the_source_and_dropout_needs_training_mode():
    cfg = _cfg("cross")
    v = _params(init_translator(cfg, jax.random.PRNGKey(0)))
    v = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, 0.5) if "gate" in jax.tree_util.keystr(path) else x, v)
    src_a, mask = _src(1)
    src_b, _ = _src(2)
    out_a = CrossTranslator(cfg).apply(v, src_a, mask)
    assert not np.allclose(out_a, CrossTranslator(cfg).apply(v, src_b, mask), atol=1e-4)
    # Masked source positions do not matter.
    changed = src_a.at[0, :3].set(100.0)
    np.testing.assert_allclose(out_a, CrossTranslator(cfg).apply(v, changed, mask), atol=1e-5)
    train = CrossTranslator(cfg).apply(v, src_a, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(train, out_a, atol=1e-6)


def test_rms_match_exact_inside_the_clamp_and_clamped_outside():
    x = jnp.asarray([[3.0, 4.0], [0.3, 0.4], [300.0, 400.0]])  # RMS 3.5355, 0.35355, 353.55
    target = 1.0
    out = np.asarray(rms_match(x, target))
    rms_in = np.sqrt(np.mean(np.asarray(x) ** 2, axis=-1))
    np.testing.assert_allclose(np.sqrt(np.mean(out[0] ** 2)), 1.0, rtol=1e-5)  # factor 0.283 in [0.25, 4]
    np.testing.assert_allclose(out[1], np.asarray(x[1]) * 2.8284271, rtol=1e-5)  # factor 2.83 in range
    np.testing.assert_allclose(out[2], np.asarray(x[2]) * 0.25, rtol=1e-6)  # wanted 0.0028: clamped to 0.25
    assert np.sqrt(np.mean(out[2] ** 2)) == pytest.approx(rms_in[2] * 0.25, rel=1e-5)
    # The factor carries no gradient: d/dx sum(rms_match(x)) = factor.
    g = jax.grad(lambda y: jnp.sum(rms_match(y, target)))(x)
    np.testing.assert_allclose(g[2], [0.25, 0.25], rtol=1e-6)
    assert table_rms(jnp.asarray([[1.0, -1.0], [2.0, 0.0]])) == pytest.approx(np.sqrt(6 / 4))


@pytest.mark.parametrize("pooling,align", [("mean", True), ("attention", False)])
def test_dit_shapes_zero_init_velocity_and_align_identity(pooling, align):
    cfg = _cfg("dit", pooling=pooling, align=align)
    v = _params(init_translator(cfg, jax.random.PRNGKey(0)))
    src, mask = _src(1)
    dit = DiTTranslator(cfg)
    cond = dit.apply(v, src, mask, method=DiTTranslator.condition)
    assert cond.shape == (3, 12)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, K, DT))
    vel = dit.apply(v, x, jnp.full((3,), 0.3), cond, method=DiTTranslator.velocity)
    assert vel.shape == (3, K, DT)
    np.testing.assert_array_equal(vel, 0.0)  # AdaLN-Zero and a zero output projection
    if align:
        np.testing.assert_array_equal(v["params"]["align"]["kernel"], np.eye(DS))
    # A dropped condition is the learned null vector.
    dropped = dit.apply(v, src, mask, jnp.asarray([True, False, True]), method=DiTTranslator.condition)
    np.testing.assert_array_equal(dropped[0], v["params"]["null_cond"])
    np.testing.assert_allclose(dropped[1], cond[1])


def test_euler_integrates_a_constant_velocity_exactly():
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)), jnp.float32)
    c = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4)), jnp.float32)
    for steps in (1, 2, 4, 7):
        np.testing.assert_allclose(euler_sample(lambda x, t: c, x0, steps), x0 + c, atol=1e-5)
    seen = []
    euler_sample(lambda x, t: seen.append(np.asarray(t)) or jnp.zeros_like(x), x0, 4)
    np.testing.assert_allclose([s[0] for s in seen], [0.0, 0.25, 0.5, 0.75])
    with pytest.raises(ValueError, match="at least one step"):
        euler_sample(lambda x, t: c, x0, 0)


def test_euler_reproduces_the_endpoint_of_the_exact_rectified_flow():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    x1 = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    exact = lambda x, t: (x1 - x) / (1 - t)[:, None, None]  # noqa: E731  the field of x_t = (1-t) z + t x1
    for steps in (2, 4):
        np.testing.assert_allclose(euler_sample(exact, z, steps), x1, atol=1e-5)


def test_guidance_combines_conditional_and_null_fields():
    field = lambda x, t, c: x * 0 + c[:, None]  # noqa: E731
    cond, null = jnp.asarray([[2.0]]), jnp.asarray([[0.5]])
    x = jnp.zeros((1, 1, 1))
    t = jnp.zeros((1,))
    assert float(guided(field, cond, null, 0.0)(x, t)[0, 0, 0]) == 2.0
    assert float(guided(field, cond, null, 1.5)(x, t)[0, 0, 0]) == pytest.approx(2.0 + 1.5 * (2.0 - 0.5))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="translator.kind"):
        TranslatorConfig(kind="mlp", source_dim=4, target_dim=4)
    with pytest.raises(ValueError, match="pooling"):
        TranslatorConfig(kind="dit", source_dim=4, target_dim=4, dit=DiTConfig(pooling="max"))
