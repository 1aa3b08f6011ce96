"""The one training loop: every experiment family runs through `train(config, experiment, mesh, workdir)`.

What it does, in order: save the resolved config; build the optimizer, the state shardings and the jitted step;
restore the latest checkpoint of `workdir` (refusing a foreign one) or initialise; then step, log, evaluate and
checkpoint. Metrics stay on the device until a log, eval or save step needs them, so the host does not wait on
every step; every checkpoint is preceded by a check that no step since the last one had a non-finite loss, so the
last checkpoint on disk is always a good one. SIGTERM (preemption) saves at the end of the current step and
returns with `preempted=True`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.parallel import rules as rules_lib
from latentjax.train import config_tools
from latentjax.train import metrics as metrics_lib
from latentjax.train import state as state_lib
from latentjax.train.checkpoint import Checkpointer, experiment_meta
from latentjax.train.experiment import Experiment
from latentjax.train.optimizer import make_optimizer
from latentjax.train.step import TRAIN_COMMAND_BUFFERS, command_buffer_options, make_train_step


# What the loop reads from a config (configs/base.py's get_config() has them all).
REQUIRED_KEYS = (
    "experiment", "seed", "eval_every", "mesh.rules", "train.steps", "train.grad_accum", "train.compute_dtype",
    "optimizer.lr", "optimizer.warmup_steps", "optimizer.decay", "optimizer.end_lr_ratio", "optimizer.b1",
    "optimizer.b2", "optimizer.eps", "optimizer.weight_decay", "optimizer.clip_norm", "checkpoint.every",
    "checkpoint.keep_last", "checkpoint.keep_best", "checkpoint.best_metric", "checkpoint.best_mode",
    "checkpoint.async_save", "checkpoint.preemption_sync_every", "logging.log_every", "logging.progress_bar",
    "logging.tensorboard")


def check_config(config: ConfigDict) -> None:
    """Fail with the missing keys named if `config` lacks what the loop reads."""
    missing = [k for k in REQUIRED_KEYS if config_tools.lookup(config, k, _MISSING) is _MISSING]
    if missing:
        raise KeyError(f"The config lacks {', '.join(missing)}; build it from configs/base.py's get_config().")


_MISSING = object()


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped with the last good checkpoint kept."""


@dataclasses.dataclass
class TrainResult:
    state: Any
    step: int
    preempted: bool = False
    last_metrics: dict = dataclasses.field(default_factory=dict)


class PreemptionFlag:
    """Set by SIGTERM. With several processes the flag is agreed on (any process got it) every `sync_every`
    steps, so all processes save the same step."""

    def __init__(self, sync_every: int = 10):
        self.flag = False
        self.sync_every = max(int(sync_every), 1)
        self._previous = None

    def install(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self.flag = True

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def requested(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.flag
        if step % self.sync_every:
            return False
        from latentjax.parallel.distributed import allgather

        return bool(np.any(allgather(np.array([self.flag], np.int32))))


def _say(is_main: bool, message: str) -> None:
    logging.info(message)
    if is_main:
        print(message, file=sys.stderr, flush=True)


def _compute_dtype(name: str) -> Optional[Any]:
    return jnp.dtype(name) if name else None


def _iterator(data: Any) -> Any:
    return data if hasattr(data, "__next__") else iter(data)


def train(config: ConfigDict, experiment: Experiment, mesh: Mesh, workdir: str) -> TrainResult:
    """Train `experiment` for `config.train.steps` steps in `workdir`, resuming from its latest checkpoint."""
    check_config(config)
    tcfg, ccfg, lcfg = config.train, config.checkpoint, config.logging
    total = int(tcfg.steps)
    is_main = jax.process_index() == 0
    rules = rules_lib.rules_from_config(dict(config.mesh.rules))
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        config_tools.save_config(config, workdir)

    optimizer, schedule = make_optimizer(config.optimizer, total, experiment.decay_mask)
    shardings = state_lib.state_shardings(experiment.init_trainable, optimizer, mesh, rules)
    abstract = state_lib.abstract_state(experiment.init_trainable, optimizer, shardings)
    meta = experiment_meta(experiment.fingerprint, abstract.params, config_tools.to_jsonable(config))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), meta, keep_last=int(ccfg.keep_last),
                        keep_best=int(ccfg.keep_best), best_metric=ccfg.best_metric or None,
                        best_mode=ccfg.best_mode, async_save=bool(ccfg.async_save))
    data = _iterator(experiment.train_data)
    if not hasattr(data, "get_state"):
        logging.warning("The train data iterator has no get_state(): resuming will not be exact.")
        data_for_ckpt = None
    else:
        data_for_ckpt = data

    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, abstract, data_for_ckpt)
        _say(is_main, f"Resuming from step {latest} ({ckpt.directory}).")
    else:
        state = state_lib.init_state(experiment.init_trainable, optimizer, int(config.seed), shardings, mesh,
                                     rules)
    start = int(jax.device_get(state.step))

    command_buffers = bool(tcfg.get("xla_command_buffers", TRAIN_COMMAND_BUFFERS))  # configs older than the key
    step_fn = make_train_step(experiment.loss_fn, optimizer, mesh, rules, shardings, experiment.batch_axes,
                              int(tcfg.grad_accum), learning_rate_fn=schedule,
                              compute_dtype=_compute_dtype(tcfg.compute_dtype),
                              compiler_options=command_buffer_options(command_buffers))
    writer = metrics_lib.MetricsWriter(workdir, start, enabled=is_main, tensorboard=bool(lcfg.tensorboard))
    preempt = PreemptionFlag(ccfg.preemption_sync_every).install()
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, disable=not (is_main and lcfg.progress_bar), dynamic_ncols=True,
               desc=config.experiment or "train")
    log_every, save_every = max(int(lcfg.log_every), 1), max(int(ccfg.every), 1)
    eval_every = int(config.eval_every) if experiment.eval_fn is not None else 0

    pending: list = []  # (step, device metrics) not yet looked at
    window: list = []  # host metrics of steps since the last log line
    last_good: dict = {"metrics": {}}  # host metrics of the last step checked finite
    clock = {"t": time.perf_counter(), "examples": 0}

    def drain() -> None:
        """Fetch pending metrics; stop on the first non-finite loss."""
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host):
            m = {f"train/{k}": v for k, v in metrics_lib.to_host_scalars(m).items()}
            loss = m.get("train/loss", 0.0)
            if not math.isfinite(loss):
                ckpt.wait()
                kept = ckpt.latest_step()
                where = (f"the last good checkpoint is step {kept} in {ckpt.directory}" if kept is not None
                         else "no checkpoint had been written yet")
                raise NonFiniteLossError(f"Loss became {loss} at step {s} (non-finite); stopping the run: {where}.")
            window.append(m)
            last_good["metrics"] = m
        bar.update(len(pending))
        pending.clear()

    def log_line(s: int) -> None:
        if not window:
            return
        now = time.perf_counter()
        rate = clock["examples"] / max(now - clock["t"], 1e-9)
        line = dict(metrics_lib.mean_of(window), **{"perf/examples_per_s": rate,
                                                     "perf/step_time_s": (now - clock["t"]) / len(window)})
        writer.write(s, line)
        bar.set_postfix(metrics_lib.format_postfix(line, rate))
        window.clear()
        clock.update(t=now, examples=0)

    preempted = False
    step = start
    if start == 0 and eval_every > 0 and config.get("eval_at_start", False):  # the curve's starting point
        writer.write(0, {f"eval/{k}": v for k, v in
                         metrics_lib.to_host_scalars(experiment.eval_fn(state.params, 0) or {}).items()})
    try:
        for step in range(start + 1, total + 1):
            try:
                batch = next(data)
            except StopIteration:
                logging.warning("The train data ran out after step %d of %d.", step - 1, total)
                step -= 1
                break
            state, m = step_fn(state, experiment.frozen, batch)
            pending.append((step, m))
            clock["examples"] += int(np.shape(next(iter(batch.values())))[0]) * jax.process_count()
            stop = preempt.requested(step)
            do_save = step % save_every == 0 or step == total or stop
            do_eval = eval_every > 0 and (step % eval_every == 0 or step == total)
            if step % log_every == 0 or do_save or do_eval or step == total:
                drain()
            if step % log_every == 0 or step == total or stop:
                log_line(step)
            eval_metrics = {}
            if do_eval:
                eval_metrics = metrics_lib.to_host_scalars(experiment.eval_fn(state.params, step) or {})
                eval_metrics = {f"eval/{k}": v for k, v in eval_metrics.items()}
                writer.write(step, eval_metrics)
            if do_save:  # every step up to here was checked finite by drain()
                ckpt.save(step, state, data_for_ckpt, metrics={**last_good["metrics"], **eval_metrics}, force=stop)
            if stop:
                ckpt.wait()
                preempted = True
                _say(is_main, f"SIGTERM received: saved step {step} to {ckpt.directory}; stopping.")
                break
        if pending:
            drain()
        log_line(step)
        if not preempted and step > start:
            ckpt.save(step, state, data_for_ckpt, metrics=dict(last_good["metrics"]))
        ckpt.wait()
    finally:
        preempt.uninstall()
        bar.close()
        writer.close()
        ckpt.close()
    return TrainResult(state=state, step=step, preempted=preempted, last_metrics=dict(last_good["metrics"]))
