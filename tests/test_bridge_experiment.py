"""End to end: configs/telepathy/tiny.py (tiny Llama sender -> tiny narrower Mistral receiver, SST-2 rows from
shared/data) through the registry and the shared training loop, with the calibration pass on."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from latentjax.bridge.model import CALIBRATION
from latentjax.parallel.mesh import make_mesh
from latentjax.train import config_tools, loop, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("bridge_e2e")
    config = config_tools.load_config(os.path.join(ROOT, "configs", "telepathy", "tiny.py") + f":root={tmp / 'pair'}")
    config.task.data_dir = data_dir
    config.train.steps = 12
    config.eval_every = 12
    config.eval.final_num_samples = 6
    config.eval.batch_size = 4
    config.eval.output_dir = str(tmp / "run" / "eval")
    config.logging.log_every = 1
    config.logging.tensorboard = False
    config.checkpoint.every = 12
    config.bridge.normalizer.mode = "calibrate"
    config.bridge.normalizer.num_samples = 16
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    experiment = registry.get("bridge")(config, mesh)
    result = loop.train(config, experiment, mesh, str(tmp / "run"))
    return config, experiment, result, str(tmp / "run")


def test_training_lowers_the_loss(run):
    _, _, result, workdir = run
    assert result.step == 12
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    lm = [r["train/lm_loss"] for r in rows if "train/lm_loss" in r]
    assert len(lm) == 12 and np.all(np.isfinite(lm))
    assert np.mean(lm[-3:]) < lm[0] - 0.02


def test_checkpoint_holds_the_bridge_only(run):
    config, experiment, result, workdir = run
    meta = ocp.StandardCheckpointer().metadata(os.path.join(workdir, "checkpoints", "12", "state")).item_metadata
    params = meta["params"]
    assert set(params) == {"params", CALIBRATION}
    n_saved = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(params["params"]))
    assert n_saved == experiment.fingerprint["bridge_num_params"]
    frozen_shapes = {tuple(x.shape) for x in jax.tree.leaves(experiment.frozen) if x.ndim >= 2}
    saved_shapes = {tuple(m.shape) for m in jax.tree.leaves(meta)}
    assert (331, 72) in frozen_shapes and (331, 48) in frozen_shapes
    assert not frozen_shapes & saved_shapes  # no frozen matrix (embeddings, layer stacks) in the checkpoint
    # The calibration statistics are stored with the bridge and never move.
    initial = experiment.init_trainable(jax.random.PRNGKey(0))[CALIBRATION]
    for name, value in result.state.params[CALIBRATION].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(getattr(initial[name], "value", initial[name])))
    assert float(np.std(result.state.params[CALIBRATION]["sender_std"])) > 0  # really calibrated, not identity


def test_final_eval_writes_reports(run):
    _, _, _, workdir = run
    folder = os.path.join(workdir, "eval", "step_0000012")
    summary = json.load(open(os.path.join(folder, "sst2_final.summary.json")))
    records = [json.loads(line) for line in open(os.path.join(folder, "sst2_final.jsonl"))]
    assert summary["n"] == len(records) == 6
    assert {"generation", "label_scoring"} <= set(summary)
    assert len(summary["label_scoring"]["confusion"]) == 2 and len(summary["generation"]["confusion"][0]) == 3
    lo, hi = summary["label_scoring"]["ci95"]
    assert 0.0 <= lo <= summary["label_scoring"]["accuracy"] <= hi <= 1.0
    assert {"input", "gold", "output", "prediction", "correct", "label_score_prediction"} <= set(records[0])
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("eval/label_scoring_accuracy" in r for r in evals)
