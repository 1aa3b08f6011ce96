"""Exact resume through the real entry point: `launch/train.py` with configs/tiny_lm.py (a 2-layer decoder on
synthetic sequences), run uninterrupted, and again stopped in the middle by SIGKILL or SIGTERM from the test and
restarted with the same command: the per-step losses in metrics.jsonl must equal the uninterrupted run's exactly.
Also: the same run on 8 CPU devices (mesh 2x2x2, gradient accumulation 2) matches, and a 1-device checkpoint
resumes on an 8-device mesh."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30


def env(tmp_cache: str, devices: int = 1) -> dict:
    e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             JAX_COMPILATION_CACHE_DIR=tmp_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    flags = [f for f in e.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    e["XLA_FLAGS"] = " ".join(flags)
    return e


def command(workdir: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "launch", "train.py"),
            "--config=" + os.path.join(ROOT, "configs", "tiny_lm.py"), f"--workdir={workdir}",
            f"--config.train.steps={STEPS}", "--config.checkpoint.every=5", "--config.logging.progress_bar=False",
            *extra]


def run(workdir: str, cache: str, *extra: str, devices: int = 1) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(workdir, *extra), capture_output=True, text=True, env=env(cache, devices),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(workdir: str) -> dict:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if "train/loss" in row:
                out[row["step"]] = row["train/loss"]
    return out


def interrupt(workdir: str, cache: str, sig: int, after_step: int = 12) -> tuple[int, str]:
    """Start a run with a slow input pipeline, send `sig` once `after_step` is logged; (exit code, stderr)."""
    err_path = workdir + ".stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(command(workdir, "--config.data.slow_s=0.01"), stdout=subprocess.DEVNULL,
                                stderr=err, env=env(cache))
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if max(losses(workdir), default=0) >= after_step:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    return rc, open(err_path).read()


def checkpoint_steps(workdir: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, cache):
    workdir = str(tmp_path_factory.mktemp("baseline") / "run")
    run(workdir, cache)
    result = losses(workdir)
    assert sorted(result) == list(range(1, STEPS + 1))
    assert result[STEPS] < result[1] - 0.5  # it learns
    return workdir, result


def test_sigkill_then_restart_resumes_exactly(baseline, cache, tmp_path):
    workdir = str(tmp_path / "run")
    rc, _ = interrupt(workdir, cache, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    killed_at = max(losses(workdir))
    assert 12 <= killed_at < STEPS
    proc = run(workdir, cache)
    resumed = int(re.search(r"Resuming from step (\d+)", proc.stderr).group(1))
    assert resumed % 5 == 0 and 5 <= resumed <= killed_at
    assert losses(workdir) == baseline[1]  # every step, bit for bit


def test_sigterm_saves_exits_cleanly_and_resumes_exactly(baseline, cache, tmp_path):
    workdir = str(tmp_path / "run")
    rc, stderr = interrupt(workdir, cache, signal.SIGTERM)
    assert rc == 0, stderr[-3000:]
    stopped = int(re.search(r"SIGTERM received: saved step (\d+)", stderr).group(1))
    assert "Preempted: checkpoint of step" in stderr
    assert max(losses(workdir)) == stopped < STEPS
    assert max(checkpoint_steps(workdir)) == stopped  # saved at the step it stopped, not the last multiple of 5
    proc = run(workdir, cache)
    assert f"Resuming from step {stopped}" in proc.stderr
    assert losses(workdir) == baseline[1]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["train"]["steps"] == STEPS and config["experiment"] == "tiny_lm"


def test_eight_devices_with_grad_accum_match_one_device(baseline, cache, tmp_path):
    workdir = str(tmp_path / "mesh8")
    run(workdir, cache, "--config.mesh.shape=(2,2,2)", "--config.train.grad_accum=2", devices=8)
    sharded, ref = losses(workdir), baseline[1]
    assert sorted(sharded) == sorted(ref)
    np.testing.assert_allclose([sharded[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)], rtol=1e-4)


def test_one_device_checkpoint_resumes_on_eight_devices(baseline, cache, tmp_path):
    moved = str(tmp_path / "moved")
    shutil.copytree(baseline[0], moved)
    proc = run(moved, cache, f"--config.train.steps={STEPS + 5}", "--config.mesh.shape=(1,4,2)", devices=8)
    assert f"Resuming from step {STEPS}" in proc.stderr
    after = losses(moved)
    assert sorted(after) == list(range(1, STEPS + 6))
    assert all(np.isfinite(after[s]) for s in range(STEPS + 1, STEPS + 6))
