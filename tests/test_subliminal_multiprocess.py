"""Generation and evaluation over two JAX processes (2 CPU devices each, gloo) equal one 4-device process: each
process samples/scores its own block of every batch and process 0 alone writes. The two-process run starts from
the one-process run's samples torn inside the second batch (generate interrupted), so it also proves the resume:
samples in prompt order without a duplicate or gap, the same stop at the target, identical sequences, identical
evaluation records and summaries."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from latentjax.eval import reports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "subliminal_multiprocess_worker.py")
LAUNCHER = os.path.join(ROOT, "launch", "local_multiprocess.py")
FAST_COMPILE = "--xla_backend_optimization_level=0"
BATCH = 16  # generate.batch_size of the worker's config
pytestmark = pytest.mark.filterwarnings("ignore")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTJAX_", "SLURM_"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])), JAX_PLATFORMS="cpu",
               XLA_FLAGS=FAST_COMPILE)
    env.update(extra)
    return env


def _rows(run_dir, *parts):
    return reports.read_jsonl(os.path.join(run_dir, *parts))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm2_dir, data_dir):
    from latentjax.subliminal.tiny import save_number_model

    model = save_number_model(str(tmp_path_factory.mktemp("numbers") / "m"), tokenizer_dir=smollm2_dir)
    single, multi = str(tmp_path_factory.mktemp("one") / "run"), str(tmp_path_factory.mktemp("two") / "run")
    one = subprocess.run([sys.executable, WORKER, model, data_dir, single],
                         env=_env(XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}"),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, (one.stdout + one.stderr)[-4000:]
    # the two-process run finds generate interrupted: one batch and 3 rows of the next written, a torn line
    full = _rows(single, "generate", "samples.jsonl")
    assert len(full) >= 2 * BATCH  # the torn file really loses rows, the two processes sample at least a batch
    shutil.copytree(os.path.join(single, "generate"), os.path.join(multi, "generate"))
    for name in ("manifest.json", "sequences.jsonl", "stats.json"):
        os.remove(os.path.join(multi, "generate", name))
    with open(os.path.join(multi, "generate", "samples.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in full[:BATCH + 3])
        f.write('{"index": %d, "pro' % (BATCH + 3))
    two = subprocess.run([sys.executable, LAUNCHER, "-n", "2", "-d", "2", "--timeout", "240", "--", WORKER, model,
                          data_dir, multi], env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, (two.stdout + two.stderr)[-6000:]
    return single, multi, two.stdout


def test_two_processes_resume_generation_with_the_same_samples_once(runs):
    single, multi, out = runs
    assert "p0/2 devices 4" in out and "p1/2 devices 4" in out and "'generate': 'done'" in out
    one, two = _rows(single, "generate", "samples.jsonl"), _rows(multi, "generate", "samples.jsonl")
    assert [r["index"] for r in two] == list(range(len(two)))  # prompt order, no duplicate, no gap
    assert len(two) % BATCH == 0 and sum(r["valid"] for r in two) >= 5  # whole batches, stopped at the target
    assert sum(r["valid"] for r in two[:-BATCH]) < 5  # ... and not a batch later
    assert two == one
    seqs = _rows(multi, "generate", "sequences.jsonl")
    assert len(seqs) == 5 and seqs == _rows(single, "generate", "sequences.jsonl")
    stats = reports.read_json(os.path.join(multi, "generate", "stats.json"))
    assert stats["sampled"] == len(one) and stats["kept"] == 5
    assert reports.read_json(os.path.join(multi, "generate", "manifest.json"))["phase"] == "generate"


def test_two_processes_evaluate_like_one(runs):
    single, multi, _ = runs
    for bench in ("math", "gsm8k", "mmlu_math"):
        two = _rows(multi, "evaluate", "base", f"{bench}.jsonl")
        assert len(two) == 4 and len({r["item"] for r in two}) == 4
        assert two == _rows(single, "evaluate", "base", f"{bench}.jsonl")
        s1 = reports.read_json(os.path.join(single, "evaluate", "base", f"{bench}.summary.json"))
        s2 = reports.read_json(os.path.join(multi, "evaluate", "base", f"{bench}.summary.json"))
        assert s1 == s2
    assert os.path.exists(os.path.join(multi, "evaluate", "base", "manifest.json"))
