"""Telepathy launchers: the token-ablation launcher on the tiny random pair (synthetic task, no data needed) writes
a table and a plot with one row per K; run_all_experiments.sh parses and its dry run prints the commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = (1, 4)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    out = tmp / "out"
    cmd = [sys.executable, os.path.join(ROOT, "launch", "telepathy_ablation.py"),
           f"--config={ROOT}/configs/telepathy/synthetic.py:root={tmp / 'pair'},steps=3",
           f"--out={out}", "--tokens=" + ",".join(map(str, TOKENS)),
           "--config.task.options.eval_size=12", "--config.eval.batch_size=12", "--config.logging.tensorboard=False",
           "--config.checkpoint.async_save=False"]
    proc = _run(cmd)
    return out, proc, cmd


def _run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ablation_writes_one_row_per_k(ablation):
    out, proc, _ = ablation
    data = json.load(open(out / "ablation.json"))
    assert [r["tokens"] for r in data["rows"]] == list(TOKENS)
    for row in data["rows"]:
        assert row["metric"] == "label_scoring" and row["n"] == 12
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
        assert row["correct"] == round(row["accuracy"] * row["n"])
        run_cfg = json.load(open(os.path.join(row["workdir"], "config.json")))
        assert run_cfg["bridge"]["num_latents"] == row["tokens"]  # each run really used its K
        assert run_cfg["train"]["steps"] == 3
    md = open(out / "ablation.md").read()
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| soft tokens")]
    assert [int(line.split("|")[1]) for line in body] == list(TOKENS)
    png = open(out / "ablation.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "| soft tokens |" in proc.stdout


def test_ablation_rerun_reuses_finished_runs(ablation):
    """Started again with the same --out, every K is restored from its checkpoint: nothing retrains, same rows."""
    out, _, cmd = ablation
    before = json.load(open(out / "ablation.json"))["rows"]
    summaries = [out / f"k{k}" / "eval" / "step_0000003" / "synthetic_final.summary.json" for k in TOKENS]
    stamps = [os.path.getmtime(p) for p in summaries]
    _run(cmd)
    after = json.load(open(out / "ablation.json"))["rows"]
    assert [(r["tokens"], r["correct"], r["n"]) for r in after] == [(r["tokens"], r["correct"], r["n"]) for r in before]
    assert stamps == [os.path.getmtime(p) for p in summaries]  # no evaluation ran again
    assert all(sorted(os.listdir(out / f"k{k}" / "checkpoints")) == ["3"] for k in TOKENS)


def test_ablation_refuses_bad_tokens(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "launch", "telepathy_ablation.py"),
           f"--config={ROOT}/configs/telepathy/synthetic.py:root={tmp_path / 'pair'}", f"--out={tmp_path}",
           "--tokens=4,x"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--tokens must be integers" in proc.stderr


SCRIPT = os.path.join(ROOT, "launch", "run_all_experiments.sh")


def test_run_all_parses():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_run_all_dry_run_prints_every_row(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "SENDER": "/m/llama", "RECEIVER": "/m/mistral", "OUT": str(tmp_path / "r")}
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    train = [line for line in lines if "launch/train.py" in line]
    ablations = [line for line in lines if "launch/telepathy_ablation.py" in line]
    for task in ("sst2", "ag_news"):  # the seed's K=8 bridge rows
        assert any(f"configs/telepathy/{task}.py" in line for line in train), task
    assert all("--config.model.sender.path=/m/llama" in line and "--config.model.receiver.path=/m/mistral" in line
               for line in train)
    assert {t for t in ("banking77", "passkey") if any(f"{t}.py" in line for line in ablations)} == {
        "banking77", "passkey"}
    assert all("--tokens=16,32,64,128" in line and "--config.model.receiver.path=/m/mistral" in line
               for line in ablations)  # Banking77 / passkey bridge rows = the K=16 runs
    baselines = [line for line in lines if "launch/telepathy_baseline.py" in line]
    for kind in ("receiver_text", "sender_text", "text_relay"):
        assert any(kind in line for line in baselines), kind
    assert not (tmp_path / "r").exists()  # a dry run creates nothing


def test_run_all_flags_override_env(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "SENDER": "/m/llama", "RECEIVER": "/m/mistral"}
    proc = subprocess.run(["bash", SCRIPT, "--sender", "/x/s", "--receiver", "/x/r", "--out", str(tmp_path / "o"),
                           "--only", "sst2"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert lines and all("ag_news" not in line and "banking77" not in line for line in lines)
    assert any("--config.model.sender.path=/x/s" in line for line in lines)
    bad = subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def _block(correct, n, **extra):
    from latentjax.eval.stats import wilson_interval

    return {"accuracy": correct / n, "correct": correct, "total": n, "ci95": list(wilson_interval(correct, n)),
            **extra}


def test_results_table_collects_the_layout(tmp_path):
    """launch/telepathy_table.py reads bridge, baseline and ablation files where the launchers write them; the
    passkey bridge row is the ablation's K=16 run."""
    from latentjax.eval.reports import write_json

    runs = tmp_path / "runs"
    write_json(runs / "sst2_bridge" / "eval" / "step_0000010" / "sst2_final.summary.json",
               {"n": 10, "generation": _block(9, 10), "label_scoring": _block(8, 10)})
    write_json(runs / "sst2_baselines" / "sst2_receiver_text.summary.json",
               {"n": 10, "generation": _block(6, 10), "label_scoring": _block(7, 10)})
    k16 = runs / "passkey_ablation" / "k16"
    write_json(k16 / "eval" / "step_0000003" / "passkey_final.summary.json",
               {"n": 20, "generation": _block(0, 20, digit_accuracy=0.234)})
    write_json(runs / "passkey_ablation" / "ablation.json", {"rows": [
        {"tokens": 16, "metric": "generation", "accuracy": 0.0, "correct": 0, "n": 20, "digit_accuracy": 0.234,
         "workdir": str(k16)},
        {"tokens": 32, "metric": "generation", "accuracy": 0.05, "correct": 1, "n": 20, "digit_accuracy": 0.2,
         "workdir": str(runs / "passkey_ablation" / "k32")}]})
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "telepathy_table.py"), f"--runs={runs}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    sst2 = [line for line in text.splitlines() if line.startswith("| sst2 |")]
    assert len(sst2) == 2  # one row per metric
    assert sst2[0].split("|")[2].strip().startswith("90.0 [") and sst2[0].split("|")[3].strip().startswith("60.0 [")
    assert sst2[1].split("|")[2].strip().startswith("80.0 [")
    passkey = [line for line in text.splitlines() if line.startswith("| passkey |")]
    assert len(passkey) == 1 and "digits 23.4" in passkey[0]
    assert "token ablation, passkey" in text and "| 32 |" in text
    assert json.load(open(runs / "results.json"))["systems"]["sst2"]["receiver_text"]["n"] == 10
