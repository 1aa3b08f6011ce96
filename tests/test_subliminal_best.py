"""Best-validation export: `Checkpointer.best_step()` picks the kept step with the best metric Orbax stored (not the
last one, not a NaN, ties to the earlier step), the choice survives reopening the directory, and the pipeline's
`best_kept_state` restores exactly that step through `Checkpointer.restore` (a checkpoint of another shape is
refused with the clear error)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.subliminal.pipeline import best_kept_state
from latentjax.train.checkpoint import CheckpointMismatchError, Checkpointer, experiment_meta
from latentjax.train.state import TrainState

FINGERPRINT = {"x": 1}


def _state(step: int, rows: int = 3) -> TrainState:
    return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((rows, 2), float(step))},
                      opt_state={"mu": jnp.full((rows, 2), -float(step))}, rng=jnp.zeros((2,), jnp.uint32))


def _checkpointer(directory: str, **kw) -> Checkpointer:
    kw = {"keep_last": 1, "keep_best": 1, "best_metric": "eval/loss", "async_save": False, **kw}
    return Checkpointer(directory, experiment_meta(FINGERPRINT, _state(0).params), **kw)


@pytest.fixture()
def ckdir(tmp_path):
    """Eval losses 3.0 (step 2), 1.5 (step 4, best), 2.0 (step 6), and step 7 saved without an evaluation (as a
    SIGTERM save is); keep_last=1 + keep_best=1."""
    directory = str(tmp_path / "checkpoints")
    ck = _checkpointer(directory)
    for step, loss in ((2, 3.0), (4, 1.5), (6, 2.0)):
        ck.save(step, _state(step), metrics={"train/loss": 9.0, "eval/loss": loss})
    ck.save(7, _state(7), metrics={"train/loss": 0.1})
    assert ck.best_step() == 4  # the writing Checkpointer knows it too
    ck.close()
    return directory


def test_best_step_is_the_lowest_stored_eval_loss_not_the_last(ckdir):
    with _checkpointer(ckdir) as ck:
        assert ck.all_steps() == [4, 7]  # best + last
        assert ck.stored_metrics() == {4: 1.5}  # only the best metric is stored, only for evaluated steps
        assert ck.best_step() == 4
        assert ck.best_step(mode="max") == 4  # the only evaluated kept step
        assert ck.best_step("eval/accuracy") is None
        with pytest.raises(ValueError, match="'min' or 'max'"):
            ck.best_step(mode="lowest")


def test_best_survives_a_restart_and_a_read_only_reopen(ckdir):
    with _checkpointer(ckdir, async_save=True) as ck:  # a resumed run (writing manager, same options)
        ck.save(8, _state(8), metrics={"eval/loss": 2.5})
        assert ck.best_step() == 4
    assert sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) == [4, 8]  # the best was kept across restarts
    with Checkpointer(ckdir, {}, best_metric="eval/loss", read_only=True) as ro:
        assert ro.best_step() == 4 and ro.stored_metrics() == {4: 1.5, 8: 2.5}
        with pytest.raises(RuntimeError, match="read-only"):
            ro.save(9, _state(9))


def test_nan_never_best_and_ties_go_to_the_earlier_step(tmp_path):
    directory = str(tmp_path / "checkpoints")
    with _checkpointer(directory, keep_last=10, keep_best=10) as ck:
        for step, loss in ((1, float("nan")), (2, 2.0), (3, 1.0), (4, 1.0), (5, float("inf"))):
            ck.save(step, _state(step), metrics={"eval/loss": loss})
    with _checkpointer(directory) as ck:
        stored = ck.stored_metrics()
        assert np.isnan(stored[1]) and stored[5] == float("inf")  # recorded as Orbax stored them ...
        assert ck.best_step() == 3  # ... but never chosen; 3 and 4 tie, the earlier wins
        assert ck.best_step(mode="max") == 2
    with _checkpointer(str(tmp_path / "only_nan")) as ck:
        ck.save(1, _state(1), metrics={"eval/loss": float("nan")})
        assert ck.best_step() is None


def test_nan_is_not_kept_as_the_best_by_the_keep_best_policy(tmp_path):
    """Orbax's BestN ranks NaN as the worst: the finite best survives a later NaN evaluation."""
    directory = str(tmp_path / "checkpoints")
    with _checkpointer(directory) as ck:
        for step, loss in ((1, 2.0), (2, float("nan")), (3, 3.0), (4, 4.0)):
            ck.save(step, _state(step), metrics={"eval/loss": loss})
        assert ck.all_steps() == [1, 4] and ck.best_step() == 1


def test_best_kept_state_restores_exactly_that_step(ckdir):
    last = _state(7)
    state, step, losses = best_kept_state(ckdir, FINGERPRINT, last, 7)
    assert step == 4 and losses == {4: 1.5}
    assert int(state.step) == 4
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.full((3, 2), 4.0))
    np.testing.assert_array_equal(np.asarray(state.opt_state["mu"]), np.full((3, 2), -4.0))
    assert state.params["w"].sharding == jax.device_put(jnp.zeros((3, 2))).sharding
    same, step, _ = best_kept_state(ckdir, FINGERPRINT, _state(4), 4)  # best is the last: nothing restored
    assert step == 4 and int(same.step) == 4
    kept, step, losses = best_kept_state(ckdir, FINGERPRINT, last, 7, metric="eval/accuracy")
    assert kept is last and step == 7 and losses == {}


def test_best_kept_state_refuses_another_model_shape_or_experiment(ckdir):
    with pytest.raises(CheckpointMismatchError, match=r"different trainable tree \(parameter 'w' is "
                                                      r"'float32\[3,2\]' in the checkpoint but 'float32\[5,2\]' here"):
        best_kept_state(ckdir, FINGERPRINT, _state(7, rows=5), 7)
    with pytest.raises(CheckpointMismatchError, match="different experiment"):
        best_kept_state(ckdir, {"x": 2}, _state(4), 4)  # refused even when the best is the last step
