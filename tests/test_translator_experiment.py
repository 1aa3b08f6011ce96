"""End to end: configs/translator/tiny.py (tiny Llama source -> narrower tiny Mistral target, GSM8K rows from
shared/data) through the registry and the shared training loop: the loss falls, the curriculum switches the
evaluation mode, per-example JSONL + summary are written, the summarize tool reads them, a rerun resumes with
the evaluation history kept; a zero weight really removes its term."""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import make_mesh
from latentjax.train import config_tools, loop, registry
from latentjax.translator import forward as F
from latentjax.translator import summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMS = [f"train/{t}_loss" for t in F.TERMS] + ["train/format_miss_rate"]


def _config(tmp, data_dir, arg, steps, eval_every):
    config = config_tools.load_config(os.path.join(ROOT, "configs", "translator", "tiny.py")
                                      + f":root={tmp / 'pair'},{arg},steps={steps},lr=1e-2")
    config.data.path = data_dir
    config.data.train_limit = 4  # = the batch: every step sees the same rows, so the loss must fall
    config.eval_every = eval_every
    config.eval.output_dir = str(tmp / "run" / "eval")
    return config


def _metrics(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def cross_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("translator_cross")
    from tests.test_translator_carry import tiny_pair

    # A target without the tiny Mistral's 7-token sliding window: the training rows carry the mode's context
    # (the prompt text, or BOS + the format line) between the soft tokens and the solution, so with a window the
    # solution could not see the soft tokens and the NLL could not move.
    tiny_pair(tmp / "pair")
    config = _config(tmp, data_dir, "kind=cross,curriculum=5", steps=8, eval_every=4)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    experiment = registry.get("translator")(config, mesh)
    result = loop.train(config, experiment, mesh, str(tmp / "run"))
    return config, experiment, result, str(tmp / "run"), mesh


def test_training_lowers_the_loss_and_logs_every_term(cross_run):
    _, _, result, workdir, _ = cross_run
    assert result.step == 8
    rows = [r for r in _metrics(workdir) if "train/nll_loss" in r]
    assert len(rows) == 8
    for key in TERMS:
        assert all(np.isfinite(r[key]) for r in rows), key
    nll = [r["train/nll_loss"] for r in rows]
    loss = [r["train/loss"] for r in rows]
    print("nll", nll, "loss", loss)
    # The same rows every step: the translator lowers the target NLL steadily within each curriculum stage (the
    # target's context changes at the switch: the prompt text before step 5, BOS + the format line from it on).
    for stage in (slice(0, 4), slice(4, 8)):
        assert nll[stage][-1] < nll[stage][0] - 1e-3 and loss[stage][-1] < loss[stage][0] - 1e-3
        assert np.all(np.diff(nll[stage]) < 0)
    assert [r["train/soft_only_fraction"] for r in rows] == [0.0] * 4 + [1.0] * 4  # curriculum from step 5
    assert [r["train/kl_active"] for r in rows] == [0.0] * 2 + [1.0] * 6  # kl_warmup_steps = 2


def test_eval_writes_jsonl_in_the_mode_of_the_step(cross_run):
    _, _, _, workdir, _ = cross_run
    quick = os.path.join(workdir, "eval", "step_0000004", "gsm8k_soft_plus_text")
    final = os.path.join(workdir, "eval", "step_0000008", "gsm8k_soft_only")
    for stem, mode in ((quick, "soft_plus_text"), (final, "soft_only")):
        records = [json.loads(line) for line in open(stem + ".jsonl")]
        summary = json.load(open(stem + ".summary.json"))
        assert len(records) == summary["n"] == 4 and summary["mode"] == mode
        assert {"id", "mode", "question", "prompt", "gold", "output", "extracted", "correct", "target_output",
                "target_extracted", "target_correct", "source_output", "source_correct"} <= set(records[0])
        assert all(r["mode"] == mode for r in records)
        assert records[0]["gold"] == "18"  # Janet's ducks, the first test item
        b = summary["bridged"]
        assert b["invalid"] == sum(r["extracted"] == "[invalid]" for r in records)
        assert b["correct"] == sum(r["correct"] for r in records)
        assert {"target_alone", "source_alone"} <= set(summary)
    evals = [r for r in _metrics(workdir) if "eval/accuracy" in r]
    assert [r["eval/soft_only"] for r in evals] == [0.0, 1.0]


def test_summarize_tool(cross_run, capsys):
    _, _, _, workdir, _ = cross_run
    assert summarize.main([os.path.join(workdir, "eval")]) == 0
    out = capsys.readouterr().out
    assert out.count("  n=4  accuracy=") == 2 and "gsm8k_soft_only.jsonl" in out and "most frequent" in out
    assert "target alone" in out


def test_total_is_the_weighted_sum_and_a_zero_weight_removes_its_term(cross_run):
    _, experiment, result, _, mesh = cross_run
    model = experiment.loss_fn.__self__
    batch = {k: jax.numpy.asarray(v) for k, v in next(iter(experiment.train_data)).items()}
    batch["step"] = batch["step"] * 0 + 10  # past the KL warmup
    rng = jax.random.PRNGKey(0)

    def total(m):
        with rules_lib.activate(mesh):
            return jax.jit(m.loss)(result.state.params, experiment.frozen, batch, rng)

    full, metrics = total(model)
    w = model.weights
    want = sum(getattr(w, t) * float(metrics[f"{t}_loss"]) for t in F.TERMS)
    assert float(full) == pytest.approx(want, rel=1e-5)
    assert float(metrics["kl_loss"]) > 0 and float(metrics["prompt_alignment_loss"]) > 0
    off = dataclasses.replace(model, weights=dataclasses.replace(w, kl=0.0, prompt_alignment=0.0))
    part, _ = total(off)
    removed = w.kl * float(metrics["kl_loss"]) + w.prompt_alignment * float(metrics["prompt_alignment_loss"])
    assert float(full - part) == pytest.approx(removed, rel=1e-3)
    # The ablation configs really switch their terms off (the reference's B and C scripts did not differ).
    kl_only = config_tools.load_config(os.path.join(ROOT, "configs", "translator", "ablation_kl_only.py"))
    kl_prompt = config_tools.load_config(os.path.join(ROOT, "configs", "translator", "ablation_kl_prompt.py"))
    assert kl_only.loss.prompt_alignment == 0 and kl_only.loss.info_nce == 0 and kl_only.loss.kl > 0
    assert kl_prompt.loss.prompt_alignment > 0 and kl_prompt.loss.kl > 0
    assert not kl_only.translator.dit.align and not kl_prompt.translator.dit.align


def test_resume_keeps_the_eval_history(cross_run):
    config, experiment, _, workdir, mesh = cross_run
    config.train.steps = 9
    config.eval_every = 100  # only the final step evaluates
    result = loop.train(config, experiment, mesh, workdir)
    assert result.step == 9
    evals = [r for r in _metrics(workdir) if "eval/accuracy" in r]
    assert len(evals) == 3  # steps 4 and 8 from the first run, 9 after resuming
    assert os.path.exists(os.path.join(workdir, "eval", "step_0000009", "gsm8k_soft_only.jsonl"))
