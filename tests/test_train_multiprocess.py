"""Two JAX processes (2 CPU devices each, gloo collectives) running launch/train.py on tiny_lm: SIGTERM sent to
one process only stops both at the same step with one checkpoint (the flag is agreed across processes), and the
restarted pair resumes exactly (each process restores its own data-iterator file)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from launch.local_multiprocess import free_port, process_env
from tests.test_train_resume import ROOT, checkpoint_steps, command, losses

pytestmark = pytest.mark.slow  # three two-process runs: about 90 s on 2 cores


def start(workdir: str, cache: str, *extra: str) -> list[subprocess.Popen]:
    port = free_port()
    base = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    procs = []
    for i in range(2):
        err = open(f"{workdir}.p{i}.stderr", "a")
        procs.append(subprocess.Popen(command(workdir, "--config.checkpoint.preemption_sync_every=2", *extra),
                                      env=process_env(base, i, 2, 2, port), stdout=subprocess.DEVNULL,
                                      stderr=err, cwd=ROOT))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    return [p.wait(timeout=timeout) for p in procs]


def stderr(workdir: str, i: int) -> str:
    return open(f"{workdir}.p{i}.stderr").read()


def test_two_processes_sigterm_one_and_resume_exactly(tmp_path):
    cache = str(tmp_path / "cache")
    full = str(tmp_path / "full")
    assert wait(start(full, cache)) == [0, 0], stderr(full, 0)[-3000:]
    reference = losses(full)
    assert sorted(reference) == list(range(1, 31))

    part = str(tmp_path / "part")
    procs = start(part, cache, "--config.data.slow_s=0.01")
    deadline = time.time() + 240
    while time.time() < deadline and max(losses(part), default=0) < 12 and procs[0].poll() is None:
        time.sleep(0.02)
    assert all(p.poll() is None for p in procs), "the run ended before it could be interrupted"
    procs[1].send_signal(signal.SIGTERM)  # only the second process is told
    assert wait(procs) == [0, 0], stderr(part, 1)[-3000:]
    stopped = max(checkpoint_steps(part))
    assert stopped % 2 == 0 and stopped < 30  # agreed at a sync step
    assert f"SIGTERM received: saved step {stopped}" in stderr(part, 0)
    data = os.listdir(os.path.join(part, "checkpoints", str(stopped), "data"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data)

    assert wait(start(part, cache)) == [0, 0], stderr(part, 0)[-3000:]
    assert f"Resuming from step {stopped}" in stderr(part, 0)
    assert losses(part) == reference
    assert json.load(open(os.path.join(part, "config.json")))["checkpoint"]["preemption_sync_every"] == 2
