"""Telepathy baselines (issue 5 item 5): the seed's prompts, each text baseline end to end on a tiny random pair
(files written, same summary keys as the bridge's evaluator), label scoring equal to a direct unpadded
log-likelihood, the text relay capped at its summary length and feeding the summary to the receiver, and prompt
tuning through the registry and the one training loop (loss falls, checkpoint holds only the soft prompt)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.bridge import baselines as bl
from latentjax.bridge.batching import answer_ids, token_ids
from latentjax.tasks import get_task
from latentjax.train import config_tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 6


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("telepathy_baselines")


@pytest.fixture(scope="module")
def config(tmp):
    cfg = config_tools.load_config(os.path.join(ROOT, "configs", "telepathy", "tiny.py") + f":root={tmp / 'pair'}")
    cfg.task.name = "synthetic"  # generated rows: no shared/data needed
    cfg.task.options = {"eval_size": 16, "train_size": 64}
    cfg.baseline.batch_size = 4  # N = 6 rows: one full and one padded batch
    cfg.baseline.relay_summary_tokens = 12
    return cfg


@pytest.fixture(scope="module")
def results(config, tmp):
    models: dict = {}  # each model folder loaded once for the four baselines
    out = {kind: bl.evaluate_baseline(config, kind, str(tmp / "out"), num_examples=N, cache=models)
           for kind in bl.BASELINES}
    assert len(models) == 2  # the tiny pair's sender and receiver
    return out


def test_prompts_render_as_the_seed_does():
    sst2 = get_task("sst2")
    assert bl.direct_prompt(sst2, "a fine film") == "Review: a fine film\nSentiment (positive or negative):"
    ag = get_task("ag_news")
    long = "x" * 400
    assert bl.direct_prompt(ag, long) == f"Article: {'x' * 256}\nTopic (world, sports, business, or science):"
    assert bl.summary_prompt("y" * 600, 512) == f"Summarize this in one sentence:\n\n{'y' * 512}\n\nSummary:"
    assert (bl.relay_prompt(sst2, "It was good.")
            == "Is the sentiment positive or negative?\n\nText: It was good.\n\nAnswer:")
    assert bl.relay_prompt(ag, "S").startswith("What is the topic: world, sports, business, or science?\n\nText: S")
    shots = [{"text": "great", "gold": "positive"}, {"text": "awful", "gold": "negative"}]
    assert bl.few_shot_prompt(sst2, shots, "meh") == (
        "Classify the sentiment as positive or negative.\n\nText: great\nLabel: positive\n\n"
        "Text: awful\nLabel: negative\n\nText: meh\nLabel:")


def test_shots_are_balanced_seeded_and_exactly_k():
    train = [{"id": i, "label": i % 4, "text": f"t{i}", "gold": "abcd"[i % 4]} for i in range(40)]
    shots = bl.draw_shots(train, 6, 4, seed=3)
    assert len(shots) == 6 and shots == bl.draw_shots(train, 6, 4, seed=3)
    counts = np.bincount([s["label"] for s in shots], minlength=4)
    assert sorted(counts.tolist()) == [1, 1, 2, 2]
    assert [s["id"] for s in bl.draw_shots(train, 6, 4, seed=4)] != [s["id"] for s in shots]
    assert bl.draw_shots(train, 0, 4, seed=0) == []


def test_left_pad_keeps_prompts_right_aligned():
    ids, mask, pads = bl.left_pad([[5, 6, 7], [8]], pad_id=0, batch_size=3, bucket=4)
    assert ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]]
    assert mask[:, -1].all() and mask.sum(1).tolist() == [3, 1, 1] and pads.tolist() == [1, 3, 3]


def test_every_text_baseline_runs_and_writes_its_files(results, tmp):
    for kind, summary in results.items():
        assert summary["baseline"] == kind and summary["n"] == N
        for key in ("accuracy", "ci95_low", "ci95_high"):
            assert 0.0 <= summary[key] <= 1.0
        assert summary["ci95_low"] <= summary["accuracy"] <= summary["ci95_high"]
        for section in ("generation", "label_scoring"):
            assert set(summary[section]) >= {"accuracy", "ci95", "per_class", "confusion"}
        with open(tmp / "out" / f"synthetic_{kind}.summary.json") as f:
            assert json.load(f)["accuracy"] == summary["accuracy"]
        with open(tmp / "out" / f"synthetic_{kind}.jsonl") as f:
            records = [json.loads(line) for line in f]
        assert len(records) == N
        assert all({"prompt", "input", "output", "gold", "correct", "label_loglik"} <= set(r) | {"prompt"}
                   for r in records)
        assert sum(r["label_score_correct"] for r in records) == summary["label_scoring"]["correct"]
    few = results["few_shot"]
    assert len(few["shots"]) == 5


def _direct_logliks(model, prompt: str, task) -> list[float]:
    """Unpadded, one label at a time: log p(answer | prompt) from the full-sequence logits."""
    prompt_ids = token_ids(model.tokenizer, prompt, True)
    out = []
    for c in range(task.num_classes):
        ans = answer_ids(model.tokenizer, task.answer_text(c), task.answer_eos)
        ids = jnp.asarray([prompt_ids + ans], jnp.int32)
        logp = jax.nn.log_softmax(model(ids)[0], axis=-1)
        out.append(float(sum(logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(ans))))
    return out


def test_label_scoring_equals_a_direct_computation(config, tmp, results):
    from latentjax.models.model import from_pretrained

    task = get_task("synthetic", eval_size=16, train_size=64)
    for kind, which in (("sender_text", "sender"), ("few_shot", "receiver")):
        model = from_pretrained(config.model[which].path, dtype="float32")
        with open(tmp / "out" / f"synthetic_{kind}.jsonl") as f:
            records = [json.loads(line) for line in f]
        for rec in records[:3] + records[-1:]:  # rows of both batches, incl. padded positions
            np.testing.assert_allclose(rec["label_loglik"], _direct_logliks(model, rec["input"], task),
                                       rtol=1e-4, atol=1e-4)
            assert rec["label_score_prediction"] == int(np.argmax(rec["label_loglik"]))


def test_text_relay_caps_the_summary_and_feeds_it_to_the_receiver(tmp, results, config):
    with open(tmp / "out" / "synthetic_text_relay.jsonl") as f:
        records = [json.loads(line) for line in f]
    cap = int(config.baseline.relay_summary_tokens)
    assert all(1 <= r["summary_tokens"] <= cap for r in records)
    assert max(r["summary_tokens"] for r in records) == cap  # a random sender runs to the cap
    task = get_task("synthetic")
    for r in records:
        assert r["input"] == bl.relay_prompt(task, r["summary"])
        assert r["text"] not in r["input"] or r["text"] in r["summary"]  # the receiver never reads the raw text
    assert results["text_relay"]["mean_summary_tokens"] <= cap


def test_unknown_baseline_is_refused(config, tmp):
    with pytest.raises(ValueError, match="Unknown baseline"):
        bl.evaluate_baseline(config, "bridge_text", str(tmp / "x"))


def test_launcher_refuses_a_mistyped_override(tmp):
    import subprocess
    import sys

    base = [sys.executable, os.path.join(ROOT, "launch", "telepathy_baseline.py"),
            f"--config={os.path.join(ROOT, 'configs', 'telepathy', 'tiny.py')}:root={tmp / 'pair'}",
            f"--out={tmp / 'cli'}"]
    typo = subprocess.run(base + ["--baseline=receiver_text", "--config.baseline.few_shot_kk=3"],
                          capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "baseline.few_shot_k" in typo.stderr
