"""Pick the kept checkpoint with the best held-out metric of a training run and restore its state.

The training loop evaluates every `eval_every` steps and at the end, writing `eval/loss` lines to
`<workdir>/metrics.jsonl` (lines past a restored step are dropped on resume, so the file reads as one run), and its
Orbax manager keeps the best checkpoint beside the last ones (`checkpoint.keep_best`). The metric values are read
from metrics.jsonl, which holds every logged metric (Orbax's per-step metadata holds only `best_metric`). A phase
can then export the adapter of its best-validation step instead of its last one.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def _manager(directory: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))  # reads only


def kept_steps(checkpoint_dir: str) -> list[int]:
    """Steps of the checkpoints present in `checkpoint_dir`."""
    if not os.path.isdir(checkpoint_dir):
        return []
    manager = _manager(checkpoint_dir)
    try:
        return sorted(int(s) for s in manager.all_steps())
    finally:
        manager.close()


def metric_by_step(metrics_path: str, metric: str) -> dict[int, float]:
    """{step: value} of `metric` in a metrics.jsonl (the last line wins for a step written twice)."""
    out: dict[int, float] = {}
    if not os.path.exists(metrics_path):
        return out
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if metric in row and "step" in row:
                out[int(row["step"])] = float(row[metric])
    return out


def best_step(workdir: str, metric: str = "eval/loss", mode: str = "min") -> tuple[Optional[int], dict]:
    """(best kept step by `metric`, {kept step: finite metric value}) of the training loop's `workdir`
    (`checkpoints/` and `metrics.jsonl`); (None, {}) when no kept checkpoint was evaluated. Ties go to the
    earlier step."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    values = metric_by_step(os.path.join(workdir, "metrics.jsonl"), metric)
    values = {s: values[s] for s in kept_steps(os.path.join(workdir, "checkpoints"))
              if s in values and math.isfinite(values[s])}
    if not values:
        return None, {}
    sign = 1.0 if mode == "min" else -1.0
    return min(values, key=lambda s: (sign * values[s], s)), values


def restore_state(checkpoint_dir: str, step: int, like: Any) -> Any:
    """The train state saved at `step`, restored into the shapes, dtypes and shardings of the state `like`."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    manager = _manager(checkpoint_dir)
    try:
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    finally:
        manager.close()
