"""The DiT translator through the tiny config and the shared loop: a few jitted steps with the flow and token
alignment terms, then evaluation soft tokens by Euler sampling from seeded noise."""
from __future__ import annotations

import jax
import numpy as np

from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import make_mesh
from latentjax.train import loop, registry
from tests.test_translator_experiment import _config, _metrics


def test_dit_steps_and_sampled_soft_tokens(tmp_path, data_dir):
    config = _config(tmp_path, data_dir, "kind=dit", steps=3, eval_every=0)
    config.loss.token_alignment = 0.1
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    experiment = registry.get("translator")(config, mesh)
    result = loop.train(config, experiment, mesh, str(tmp_path / "run"))
    rows = [r for r in _metrics(str(tmp_path / "run")) if "train/nll_loss" in r]
    assert len(rows) == 3 and all(np.isfinite(r["train/loss"]) for r in rows)
    assert all(r["train/dit_flow_loss"] > 0 and r["train/token_alignment_loss"] > 0 for r in rows)
    assert experiment.fingerprint["translator"]["kind"] == "dit" and result.step == 3
    # Evaluation soft tokens: Euler sampling from seeded noise, deterministic for a key.
    model = experiment.loss_fn.__self__
    batch = next(iter(experiment.train_data))
    ids, mask = jax.numpy.asarray(batch["sender_input_ids"]), jax.numpy.asarray(batch["sender_attention_mask"])
    with rules_lib.activate(mesh):
        sample = jax.jit(model.eval_soft_tokens)
        a = sample(result.state.params, experiment.frozen, ids, mask, jax.random.PRNGKey(1))
        b = sample(result.state.params, experiment.frozen, ids, mask, jax.random.PRNGKey(1))
        c = sample(result.state.params, experiment.frozen, ids, mask, jax.random.PRNGKey(2))
    assert a.shape == (4, model.num_soft, model.receiver.hidden_size)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(np.asarray(a)))
