"""Metrics to `workdir/metrics.jsonl` (one JSON object per line, with "step") and TensorBoard events in
`workdir/tb/`. On resume, lines and events past the restored step are dropped, so the files read as one run."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np


def to_host_scalars(metrics: Mapping[str, Any]) -> dict:
    """Scalar entries as Python floats (non-scalars are skipped)."""
    out = {}
    for k, v in metrics.items():
        a = np.asarray(v)
        if a.size == 1 and np.issubdtype(a.dtype, np.number):
            out[k] = float(a.reshape(()))
    return out


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_after(path: str, step: int) -> None:
    """Drop lines whose step is past `step` (written by a run that stopped before its next checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    with open(path, "w") as f:
        f.writelines(keep)


class MetricsWriter:
    """Appends metrics lines and TensorBoard scalars; a no-op on processes other than the main one."""

    def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        truncate_after(self.path, start_step)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        scalars = to_host_scalars(metrics)
        self._file.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def mean_of(rows: list[Mapping[str, float]]) -> dict:
    """Per-key mean over a window of per-step host metrics."""
    keys = {k for r in rows for k in r}
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in sorted(keys)}


def format_postfix(metrics: Mapping[str, float], examples_per_s: Optional[float]) -> dict:
    out = {"loss": f"{metrics.get('train/loss', float('nan')):.4f}"}
    if examples_per_s is not None:
        out["ex/s"] = f"{examples_per_s:.1f}"
    return out
