"""Best-validation export: the kept checkpoint with the lowest `eval/loss` in the loop's metrics.jsonl is chosen
(not the last one), its state is restored exactly, and checkpoints without an evaluation are never chosen."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.subliminal import best_checkpoint
from latentjax.train.checkpoint import Checkpointer
from latentjax.train.state import TrainState


def _state(step: int) -> TrainState:
    return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((3, 2), float(step))},
                      opt_state={"mu": jnp.full((3, 2), -float(step))}, rng=jnp.zeros((2,), jnp.uint32))


@pytest.fixture()
def workdir(tmp_path):
    """A loop workdir: eval losses 3.0 (step 2), 1.5 (step 4, best), 2.0 (step 6), and step 7 saved without an
    evaluation (as a SIGTERM save is); keep_last=1 + keep_best=1."""
    directory = str(tmp_path / "train")
    ck = Checkpointer(os.path.join(directory, "checkpoints"), {"fingerprint": {"x": 1}}, keep_last=1, keep_best=1,
                      best_metric="eval/loss", async_save=False)
    lines = []
    for step, loss in ((2, 3.0), (4, 1.5), (6, 2.0)):
        ck.save(step, _state(step), metrics={"train/loss": 9.0, "eval/loss": loss})
        lines += [{"step": step, "train/loss": 9.0}, {"step": step, "eval/loss": loss}]
    ck.save(7, _state(7), metrics={"train/loss": 0.1})
    ck.close()
    lines.append({"step": 7, "train/loss": 0.1})
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    return directory


def test_best_step_is_the_lowest_eval_loss_not_the_last(workdir):
    assert best_checkpoint.kept_steps(os.path.join(workdir, "checkpoints")) == [4, 7]  # best + last
    step, values = best_checkpoint.best_step(workdir, "eval/loss", "min")
    assert step == 4 and values == {4: 1.5}
    assert best_checkpoint.best_step(workdir, "eval/loss", "max")[0] == 4  # the only evaluated kept step
    assert best_checkpoint.best_step(workdir, "eval/accuracy") == (None, {})
    with pytest.raises(ValueError, match="'min' or 'max'"):
        best_checkpoint.best_step(workdir, mode="lowest")


def test_restore_state_gives_that_steps_values(workdir):
    restored = best_checkpoint.restore_state(os.path.join(workdir, "checkpoints"), 4, _state(7))
    assert int(restored.step) == 4
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.full((3, 2), 4.0))
    np.testing.assert_array_equal(np.asarray(restored.opt_state["mu"]), np.full((3, 2), -4.0))
    assert restored.params["w"].sharding == jax.device_put(jnp.zeros((3, 2))).sharding
