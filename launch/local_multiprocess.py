"""Start N JAX processes on this machine (CPU devices, gloo collectives): a multi-host run without the hosts.

    python launch/local_multiprocess.py --num_processes 2 --devices_per_process 2 -- launch/train.py --config ...
    python launch/local_multiprocess.py -n 2 -d 4 -- -m some.module --flag

Every process gets JAX_PLATFORMS=cpu, XLA_FLAGS=--xla_force_host_platform_device_count=D and the
LATENTJAX_COORDINATOR / LATENTJAX_NUM_PROCESSES / LATENTJAX_PROCESS_ID variables that
`latentjax.parallel.distributed.initialize_from_env()` reads (the entry point must call it). Output lines are
prefixed with the process index. If one process fails the others are stopped; the exit status is the first
non-zero one.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict, process_id: int, num_processes: int, devices: int, port: int) -> dict:
    env = dict(base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["LATENTJAX_COORDINATOR"] = f"127.0.0.1:{port}"
    env["LATENTJAX_NUM_PROCESSES"] = str(num_processes)
    env["LATENTJAX_PROCESS_ID"] = str(process_id)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()


def run(command: list[str], num_processes: int, devices_per_process: int, timeout: float | None = None,
        env: dict | None = None) -> int:
    """Run `python <command>` as `num_processes` cooperating processes; returns the exit status."""
    port = free_port()
    procs, pumps = [], []
    for i in range(num_processes):
        p = subprocess.Popen([sys.executable, *command],
                             env=process_env(env or os.environ, i, num_processes, devices_per_process, port),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", sys.stdout), daemon=True)
        t.start()
        procs.append(p)
        pumps.append(t)
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            break
        failed = [c for c in codes if c not in (None, 0)]
        late = deadline is not None and time.monotonic() > deadline
        if failed or late:
            status = failed[0] if failed else 124
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(0.1)
    for t in pumps:
        t.join(timeout=5)
    return status or next((p.returncode for p in procs if p.returncode), 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num_processes", type=int, default=2)
    parser.add_argument("-d", "--devices_per_process", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="script.py [args] or -m module [args]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the entry point to run, e.g. `-- launch/train.py --config ...`")
    return run(command, args.num_processes, args.devices_per_process, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
