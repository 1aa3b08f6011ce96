"""Two JAX processes on this machine (gloo CPU collectives, 2 devices each) agree with one 4-device process:
sharded load, train step, Orbax save/restore of sharded state (`launch/check_distributed.py`), through the
local launcher `launch/local_multiprocess.py`."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launch", "local_multiprocess.py")
WORKER = os.path.join(ROOT, "launch", "check_distributed.py")
# fsdp across the two hosts with tensor inside each; then data across hosts.
MESHES = ("1,2,2", "2,1,2")
FAST_COMPILE = "--xla_backend_optimization_level=0"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTJAX_", "SLURM_"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])), JAX_PLATFORMS="cpu",
               XLA_FLAGS=FAST_COMPILE)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from latentjax.testing import save_tiny_hf_model

    model = save_tiny_hf_model(str(tmp_path_factory.mktemp("tiny")), vocab_size=336)
    single, multi = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("multi")
    worker_args = [WORKER, "--model", model, "--generate", "3", *(a for m in MESHES for a in ("--mesh", m))]
    one = subprocess.Popen([sys.executable, *worker_args, "--out", str(single)],
                           env=_env(XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.run([sys.executable, LAUNCHER, "-n", "2", "-d", "2", "--timeout", "240", "--", *worker_args,
                          "--out", str(multi)], env=_env(), capture_output=True, text=True, timeout=300)
    one_out = one.communicate(timeout=300)[0]
    assert one.returncode == 0, one_out[-4000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-6000:]
    return (dict(np.load(single / "result_p0.npz")), [dict(np.load(multi / f"result_p{i}.npz")) for i in (0, 1)],
            two.stdout)


def test_two_processes_agree_with_one(runs):
    single, per_process, _ = runs
    for result in per_process:
        assert sorted(result) == sorted(single)
        for key, want in single.items():
            if key.endswith(("mesh_processes", "process_rows")):
                continue
            np.testing.assert_allclose(result[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
    for mesh in MESHES:
        assert single[f"{mesh}/['loss2']"] < single[f"{mesh}/['loss1']"]  # the restored state trains on
        assert single[f"{mesh}/['logits']"].shape == (8, 16, 336)
        assert single[f"{mesh}/['generated']"].shape == (8, 3)


def test_hybrid_mesh_keeps_tensor_inside_a_host(runs):
    _, (p0, p1), out = runs
    # fsdp=2 x tensor=2 over 2 hosts: the hosts take fsdp, each host's 2 devices form the tensor axis.
    np.testing.assert_array_equal(p0["1,2,2/mesh_processes"], [[[0, 0], [1, 1]]])
    np.testing.assert_array_equal(p0["2,1,2/mesh_processes"], [[[0, 0]], [[1, 1]]])
    # each process fed the contiguous half of the global batch that its devices hold
    for mesh in MESHES:
        np.testing.assert_array_equal(p0[f"{mesh}/process_rows"], [0, 4])
        np.testing.assert_array_equal(p1[f"{mesh}/process_rows"], [4, 8])
    assert "2 processes" in out and "orbax save/restore ok" in out
    assert "[p1]" in out and "INFO [p1]" not in out  # only process 0 logs below WARNING


def test_launcher_stops_everyone_when_one_process_fails():
    code = ("import os, sys, time; pid = int(os.environ['LATENTJAX_PROCESS_ID']); "
            "assert os.environ['LATENTJAX_NUM_PROCESSES'] == '3'; "
            "assert '--xla_force_host_platform_device_count=2' in os.environ['XLA_FLAGS']; "
            "time.sleep(0 if pid == 1 else 60); sys.exit(3 if pid == 1 else 0)")
    start = time.time()
    done = subprocess.run([sys.executable, LAUNCHER, "-n", "3", "-d", "2", "--", "-c", code], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.time() - start < 30


ALLGATHER = ("import sys; sys.path.insert(0, '.'); import numpy as np; from latentjax.parallel import distributed; "
             "assert distributed.initialize_from_env(); import jax; "
             "got = distributed.allgather(np.array([jax.process_index()])); "
             # one write per line: both processes share the pipe, and print() writes in pieces that can interleave
             "sys.stdout.write(f'OK {jax.process_count()} {jax.device_count()} {got.ravel().tolist()}\\n'); "
             "sys.stdout.flush()")


def test_slurm_template_starts_one_process_per_node(tmp_path):
    """launch/slurm_multinode.sbatch with a stand-in `srun` that starts 2 tasks here with SLURM's variables."""
    srun = tmp_path / "srun"
    srun.write_text("#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n"
                    "pids=(); for i in 0 1; do SLURM_NTASKS=2 SLURM_PROCID=$i SLURM_LOCALID=0 "
                    "SLURM_STEP_NODELIST='localhost' \"$@\" & pids+=($!); done\n"
                    "fail=0; for p in \"${pids[@]}\"; do wait $p || fail=1; done\nexit $fail\n")
    srun.chmod(0o755)
    env = _env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", SLURM_SUBMIT_DIR=ROOT, SLURM_JOB_ID="77",
               LATENTJAX_PYTHON=sys.executable, LATENTJAX_COORDINATOR_PORT=str(free_port()),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm_multinode.sbatch"), "-c", ALLGATHER],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count("OK 2 4 [0, 1]") == 2, done.stdout
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in done.stdout  # the GPU flags were sourced


def test_generic_launcher_reads_torch_style_variables(tmp_path):
    port = free_port()
    procs = [subprocess.Popen(["bash", os.path.join(ROOT, "launch", "run_multihost.sh"), "-c", ALLGATHER],
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(i),
                                       LATENTJAX_PYTHON=sys.executable,
                                       XLA_FLAGS="--xla_force_host_platform_device_count=1"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("OK 2 2 [0, 1]" in out for out in outs), outs
