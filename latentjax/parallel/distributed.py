"""Multi-host start-up: `jax.distributed` from the environment, process-0 logging, global batches.

Call `initialize_from_env()` first thing in every entry point's `main()` (after parsing flags, before anything
touches a device; never at import time, since grain workers re-import the main module). It reads, in order:

1. `LATENTJAX_COORDINATOR` (host:port), `LATENTJAX_NUM_PROCESSES`, `LATENTJAX_PROCESS_ID` (and optionally
   `LATENTJAX_LOCAL_DEVICE_IDS`, e.g. "0,1"): any scheduler (`launch/run_multihost.sh`, `launch/local_multiprocess.py`).
2. SLURM (`SLURM_NTASKS` > 1, `SLURM_PROCID`, `SLURM_STEP_NODELIST` or `SLURM_JOB_NODELIST`): the first host of the
   node list is the coordinator; the port is `LATENTJAX_COORDINATOR_PORT` or derived from `SLURM_JOB_ID`.
   Launch one task per node (`launch/slurm_multinode.sbatch`); each process then drives all of its node's GPUs.
3. Cloud TPU (`TPU_WORKER_HOSTNAMES` / `MEGASCALE_COORDINATOR_ADDRESS` in the environment), or
   `LATENTJAX_DISTRIBUTED=auto`: `jax.distributed.initialize()` with JAX's own cluster detection.
4. Otherwise a single process: nothing to do.

Checkpoints and files with several processes:
- Orbax saves are collective: every process calls `save` / `restore` with the same directory (a file system all
  hosts see) and the same global arrays; each writes its own shards. Never guard an Orbax call with
  `is_main_process()`, or the other processes wait for ever. Place scalars (step, rng) as global arrays with
  `jax.device_put(x, NamedSharding(mesh, P()))`: Orbax refuses plain host scalars in multi-process saves.
- Metrics, resolved configs, eval outputs and other plain files: write them from process 0 only
  (`if is_main_process(): ...`), after fetching values with `to_host` (which every process must call).
- Data: every process loads only its own part of the global batch (grain's `ShardByJaxProcess`), then
  `global_batch` assembles the global arrays the jitted step expects.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import sys
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh

from latentjax.parallel import rules as rules_lib

log = logging.getLogger(__name__)

ENV_COORDINATOR = "LATENTJAX_COORDINATOR"
ENV_NUM_PROCESSES = "LATENTJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "LATENTJAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "LATENTJAX_LOCAL_DEVICE_IDS"
ENV_PORT = "LATENTJAX_COORDINATOR_PORT"
ENV_MODE = "LATENTJAX_DISTRIBUTED"  # "auto" (JAX's detection) or "off" (never initialize)
TPU_MARKERS = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


class DistributedError(RuntimeError):
    """An environment that describes a multi-process run inconsistently."""


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu[003-007,010],cpu1' -> 'gpu003'; 'a-[1-2]-ib' -> 'a-1-ib'."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist)
    if not m or not (m.group(1) or m.group(2)):
        raise DistributedError(f"Cannot read the first host of the SLURM node list {nodelist!r}.")
    prefix, ranges, suffix = m.group(1), m.group(2), m.group(3)
    if ranges is None:
        return prefix + suffix
    first = re.split(r"[,-]", ranges, maxsplit=1)[0]
    return prefix + first + suffix


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError as e:
        raise DistributedError(f"{key}={env[key]!r} is not an integer.") from e


def distributed_args(env: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """The `jax.distributed.initialize` keyword arguments the environment asks for; None for one process.
    `{}` means "let JAX detect the cluster" (TPU, `LATENTJAX_DISTRIBUTED=auto`). Pure: reads `env` only."""
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "").lower()
    if mode == "off":
        return None
    explicit = [k for k in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID) if k in env]
    if explicit:
        if len(explicit) != 3:
            raise DistributedError(
                f"Set all of {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} (only {', '.join(explicit)} "
                "are set).")
        n, pid = _int_env(env, ENV_NUM_PROCESSES), _int_env(env, ENV_PROCESS_ID)
        if not 0 <= pid < n:
            raise DistributedError(f"{ENV_PROCESS_ID}={pid} must lie in [0, {ENV_NUM_PROCESSES}={n}).")
        if n == 1:
            return None
        coordinator = env[ENV_COORDINATOR]
        if ":" not in coordinator:
            coordinator = f"{coordinator}:{env.get(ENV_PORT, '12321')}"
        args = dict(coordinator_address=coordinator, num_processes=n, process_id=pid)
        if env.get(ENV_LOCAL_DEVICE_IDS):
            args["local_device_ids"] = [int(i) for i in env[ENV_LOCAL_DEVICE_IDS].split(",")]
        return args
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and _int_env(env, "SLURM_NTASKS") > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise DistributedError("SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST / SLURM_JOB_NODELIST is set.")
        port = env.get(ENV_PORT) or str(int(env.get("SLURM_JOB_ID", "0")) % 4096 + 61440)
        args = dict(coordinator_address=f"{first_slurm_host(nodelist)}:{port}",
                    num_processes=_int_env(env, "SLURM_NTASKS"), process_id=_int_env(env, "SLURM_PROCID"))
        if env.get(ENV_LOCAL_DEVICE_IDS):
            args["local_device_ids"] = [int(i) for i in env[ENV_LOCAL_DEVICE_IDS].split(",")]
        return args
    if mode == "auto" or any(k in env for k in TPU_MARKERS):
        return {}
    return None


def is_initialized() -> bool:
    from jax._src import distributed as _dist  # no public query in jax 0.10

    return _dist.global_state.client is not None


def initialize_from_env(env: Optional[Mapping[str, str]] = None, **overrides: Any) -> bool:
    """Start `jax.distributed` as the environment describes (see module doc). Returns True when this is a
    multi-process run. Safe to call twice. `overrides` go to `jax.distributed.initialize` (e.g. timeouts)."""
    if is_initialized():
        return True
    args = distributed_args(env)
    if args is None:
        return False
    # Multi-process CPU runs (tests, local_multiprocess.py) need cross-process collectives; GPU/TPU ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    args.update(overrides)
    log.info("jax.distributed.initialize(%s)", ", ".join(f"{k}={v}" for k, v in args.items()))
    jax.distributed.initialize(**args)
    # Leave together: left to interpreter teardown, each process's distributed client and (on process 0) the
    # coordination service are destroyed in no set order, and a process whose coordinator is already gone can hang
    # there (seen once in CI: both processes had printed their results, then neither exited within 120 s). jax's
    # own shutdown passes the shutdown barrier first and stops process 0's service last.
    atexit.register(_shutdown_at_exit)
    return True


def _shutdown_at_exit() -> None:
    if is_initialized():
        jax.distributed.shutdown()


def is_main_process() -> bool:
    return jax.process_index() == 0


def setup_logging(level: int = logging.INFO, fmt: str = "%(asctime)s %(levelname)s [p{proc}] %(name)s: %(message)s"
                  ) -> None:
    """Root logging: process 0 at `level`, the other processes at WARNING (each line tagged with its process)."""
    proc = jax.process_index()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt.replace("{proc}", str(proc))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if proc == 0 else max(level, logging.WARNING))
    if proc != 0:  # absl (Orbax logs through it) would otherwise print from every process
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.WARNING)
        except ImportError:
            pass


def barrier(name: str) -> None:
    """Wait until every process reaches `barrier(name)` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def global_batch(batch: Any, mesh: Mesh, rules=rules_lib.DEFAULT_RULES, axes: Optional[Mapping[str, tuple]] = None
                 ) -> Any:
    """Global arrays from this process's rows of a batch (a dict or pytree of host numpy arrays).

    Each process passes the rows its devices hold (`global_batch_size / process_count` when the batch axes span
    all processes, as with the default rules and meshes); the leading axis is sharded by the
    `batch` rule (or by `axes[key]`, logical names of the leading dims, for dict batches). With one process this
    is a sharded `device_put` of the whole batch."""
    axes = axes or {}

    def sharding_of(path, x):
        key = getattr(path[0], "key", None) if path else None
        names = tuple(axes.get(key, ("batch",)))
        names = names + (None,) * (np.ndim(x) - len(names))
        return rules_lib.logical_sharding(names[: np.ndim(x)], mesh, rules)

    shardings = jax.tree_util.tree_map_with_path(sharding_of, batch)
    if jax.process_count() == 1:  # one transfer call for the whole batch (a third of the host time per step)
        return jax.device_put(jax.tree.map(np.asarray, batch), shardings)
    # global shapes inferred from the shardings: each process passes its own rows
    return jax.tree.map(lambda x, sh: jax.make_array_from_process_local_data(sh, np.asarray(x)), batch, shardings)


def process_rows(global_batch_size: int, mesh: Mesh, rules=rules_lib.DEFAULT_RULES) -> slice:
    """The rows of a global batch that this process's devices hold (what its data loader must yield; with the
    default rules and a hybrid mesh, process p holds the p-th contiguous block, as grain's ShardByJaxProcess)."""
    sharding = rules_lib.batch_sharding(mesh, 1, rules)
    rows = [idx[0].indices(global_batch_size) for idx in
            sharding.addressable_devices_indices_map((global_batch_size,)).values()]
    lo, hi = min(r[0] for r in rows), max(r[1] for r in rows)
    held = set().union(*(range(*r) for r in rows))
    if len(held) != hi - lo:
        raise ValueError(f"This process holds non-contiguous batch rows on mesh {dict(mesh.shape)}; "
                         "give the data axis the hosts.")
    return slice(lo, hi)


def _identity(a):  # one function object, so repeated gathers (the preemption check) reuse its compilation
    return a


def _gathered(x: jax.Array) -> np.ndarray:
    """A global array, whole, on this host. Every local shard of the replicated copy is waited for, not only the
    one read: `multihost_utils.process_allgather` returns once its first local shard is ready, and a process that
    then exits while another local device is still in the gather can hang there, its peers gone (seen with
    multi-process CPU (gloo) collectives: 1 run in ~15 under load)."""
    if not isinstance(x.sharding, jax.sharding.NamedSharding):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    whole = jax.jit(_identity, out_shardings=x.sharding.update(spec=jax.sharding.PartitionSpec()))(x)
    return np.asarray(jax.block_until_ready(whole).addressable_data(0))


def allgather(x: Any) -> np.ndarray:
    """Every process's value of a host array (the same shape everywhere), stacked in process order: [processes,
    ...]. Collective: all must call it."""
    x = np.asarray(x)[None]
    if jax.process_count() == 1:
        return x
    devices = np.array(jax.devices()).reshape(jax.process_count(), jax.local_device_count())
    by_process = jax.sharding.NamedSharding(Mesh(devices, ("processes", "local")),
                                            jax.sharding.PartitionSpec("processes"))
    return _gathered(jax.make_array_from_process_local_data(by_process, x))


def to_host(x: Any) -> Any:
    """Numpy copies of (possibly non-addressable) global arrays, on every process. Collective: all must call it."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, x)
    return jax.tree.map(lambda a: _gathered(a) if isinstance(a, jax.Array) and not a.is_fully_addressable
                        else np.asarray(a), x)
