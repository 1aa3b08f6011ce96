"""Golden values of each translator loss term on tiny hand-made tensors."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.translator import losses as L


def test_kl_is_zero_for_identical_distributions_and_matches_a_hand_value():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5)), jnp.float32)
    mask = jnp.ones((2, 3))
    assert float(L.masked_kl(logits, logits, mask)) == pytest.approx(0.0, abs=1e-7)
    assert float(L.masked_kl(logits, logits + 3.0, mask)) == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    p = jnp.log(jnp.asarray([[[0.5, 0.5]]]))
    q = jnp.log(jnp.asarray([[[0.25, 0.75]]]))
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(L.masked_kl(p, q, jnp.ones((1, 1)))) == pytest.approx(want, rel=1e-6)
    # Masked positions do not count: the mean is over the kept ones only.
    both_p = jnp.concatenate([p, p], axis=1)
    both_q = jnp.concatenate([q, p + 100.0], axis=1)
    assert float(L.masked_kl(both_p, both_q, jnp.asarray([[1, 0]]))) == pytest.approx(want, rel=1e-6)
    assert float(L.masked_kl(both_p, both_q, jnp.zeros((1, 2)))) == 0.0


def test_first_n_mask_keeps_the_first_answer_positions():
    mask = jnp.asarray([[0, 0, 1, 1, 1, 1, 0], [1, 0, 1, 0, 1, 1, 1]])
    np.testing.assert_array_equal(L.first_n_mask(mask, 2), [[0, 0, 1, 1, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0]])


def test_info_nce_matches_a_hand_computation():
    q = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    k = np.asarray([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = qn @ kn.T / 0.07
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    want = -np.mean(np.diag(logp))
    assert float(L.info_nce(jnp.asarray(q), jnp.asarray(k), 0.07)) == pytest.approx(want, rel=1e-5)
    # Perfectly aligned, well separated pairs give a loss near 0; a single row has no negatives.
    eye = jnp.eye(3)
    assert float(L.info_nce(eye, 5 * eye, 0.07)) < 1e-5
    assert float(L.info_nce(eye[:1], eye[:1])) == 0.0


def test_masked_mse_and_pool():
    a = jnp.asarray([[[1.0, 1.0], [3.0, 3.0]]])
    b = jnp.zeros((1, 2, 2))
    assert float(L.masked_mse(a, b, jnp.asarray([[1, 0]]))) == pytest.approx(1.0)
    assert float(L.masked_mse(a, b, jnp.asarray([[1, 1]]))) == pytest.approx(5.0)
    np.testing.assert_allclose(L.masked_mean_pool(a, jnp.asarray([[0, 1]])), [[3.0, 3.0]])


def test_flow_loss_is_zero_for_the_true_velocity():
    rng = np.random.default_rng(1)
    x1, z = (jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32) for _ in range(2))
    mask = jnp.ones((2, 3))
    assert float(L.flow_loss(x1 - z, x1, z, mask)) == pytest.approx(0.0, abs=1e-7)
    assert float(L.flow_loss(x1 - z + 0.5, x1, z, mask)) == pytest.approx(0.25, rel=1e-6)
    assert float(L.flow_loss(x1 - z + 0.5, x1, z, mask.at[:, 0].set(0))) == pytest.approx(0.25, rel=1e-6)


def test_format_surrogate_and_monitor():
    hash_id = 2
    # Row 0 puts p = 0.7 on the '####' token at one answer position; row 1 never predicts it.
    probs = np.full((2, 3, 4), 0.1)
    probs[0, 1] = [0.1, 0.1, 0.7, 0.1]
    probs[1, :] = [0.7, 0.1, 0.1, 0.1]
    logits = jnp.log(jnp.asarray(probs))
    mask = jnp.asarray([[1, 1, 1], [1, 1, 0]])
    want = ((1 - 0.7) + (1 - 0.1)) / 2
    assert float(L.format_surrogate(logits, mask, hash_id)) == pytest.approx(want, rel=1e-5)
    assert float(L.format_monitor(logits, mask, hash_id)) == pytest.approx(0.5)
    # Outside the mask the token does not count; rows without answer positions are ignored.
    assert float(L.format_monitor(logits, jnp.asarray([[1, 0, 1], [0, 0, 0]]), hash_id)) == pytest.approx(1.0)
    g = jax.grad(lambda x: L.format_surrogate(x, mask, hash_id))(logits)
    assert float(jnp.abs(g).sum()) > 0  # the surrogate is differentiable
