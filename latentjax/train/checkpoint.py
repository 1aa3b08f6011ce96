"""Orbax checkpoints of the train state, the data-iterator state and the run's metadata; exact resume.

One step folder holds three items: `state` (trainable params, optimizer state, step, PRNG; StandardSave, sharded),
`data` (the input iterator's state, one file per process, through grain's Orbax handler) and `meta` (JSON: the
experiment fingerprint, the trainable tree's shapes and the resolved config). Frozen weights are never saved.
Before restoring, the stored fingerprint and trainable shapes are compared with the current experiment; a
checkpoint written for something else is refused with one clear sentence instead of being half-loaded.
With `keep_best`, each step's best metric is stored by Orbax beside the step (so keep-best survives restarts) and
`best_step()` reads the best kept step back from those records.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging
from grain import checkpoint as grain_checkpoint

from latentjax.train.state import TrainState


class CheckpointMismatchError(ValueError):
    """A checkpoint written for a different model, experiment or trainable tree."""


def trainable_signature(params: Any) -> dict:
    """{'path/to/param': 'float32[3,4]'} for a tree of arrays or ShapeDtypeStructs."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    out = {}
    for path, leaf in flat:
        key = "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)
        out[key] = f"{jax.numpy.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]"
    return out


def experiment_meta(fingerprint: dict, params: Any, config: Any = None) -> dict:
    """The `meta` a Checkpointer stores and checks: the experiment fingerprint, the trainable tree's signature
    (`params`: arrays or ShapeDtypeStructs) and, for the record, the jsonable resolved config."""
    return dict(fingerprint=fingerprint, trainable=trainable_signature(params), config=config)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with the shapes, dtypes and shardings of the arrays in `tree` (a restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _rank_fn(metric: str, mode: str):
    """metrics -> a sortable value of `metric`; NaN, Inf and a missing value rank as the worst, so Orbax never
    keeps them as the best."""
    worst = math.inf if mode == "min" else -math.inf

    def rank(metrics: Any) -> float:
        value = float(metrics.get(metric, worst)) if metrics else worst
        return value if math.isfinite(value) else worst

    return rank


def best_of(values: dict, mode: str = "min") -> Optional[int]:
    """The step of {step: metric} with the best finite value (ties: the earlier step); None when none is finite."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    finite = {s: v for s, v in values.items() if math.isfinite(v)}
    if not finite:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(finite, key=lambda s: (sign * finite[s], s))


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _first_difference(stored: dict, current: dict) -> Optional[str]:
    stored, current = _flatten(stored), _flatten(current)
    for key in sorted(set(stored) | set(current)):
        if key not in current:
            return f"{key!r} is in the checkpoint but not in this experiment"
        if key not in stored:
            return f"{key!r} is in this experiment but not in the checkpoint"
        if stored[key] != current[key]:
            return f"{key!r} is {stored[key]!r} in the checkpoint but {current[key]!r} here"
    return None


class _IteratorState:
    """Adapter between any iterator with get_state/set_state and grain's Orbax handler (which stores bytes, one
    file per process). The state is captured when `save` is called, so async saving cannot see a later state."""

    def __init__(self, iterator: Any, capture: bool):
        self.iterator = iterator
        self._payload = None
        if capture:
            state = iterator.get_state()
            payload = {"bytes": state.decode()} if isinstance(state, bytes) else {"json": state}
            self._payload = json.dumps(payload, indent=1).encode()

    def get_state(self) -> bytes:
        return self._payload

    def set_state(self, payload: bytes) -> None:
        payload = json.loads(payload)
        self.iterator.set_state(payload["bytes"].encode() if "bytes" in payload else payload["json"])

    def start_prefetch(self) -> None:
        if hasattr(self.iterator, "start_prefetch"):
            self.iterator.start_prefetch()


def _preservation(keep_last: int, keep_best: int, best_metric: Optional[str], best_mode: str):
    cm = ocp.checkpoint_managers
    if best_metric and keep_best > 0 and hasattr(cm, "AnyPreservationPolicy"):
        return cm.AnyPreservationPolicy([
            cm.LatestN(n=keep_last),
            cm.BestN(get_metric_fn=_rank_fn(best_metric, best_mode), reverse=best_mode == "min", n=keep_best,
                     keep_checkpoints_without_metrics=False)])
    return None


class Checkpointer:
    """Saves and restores (state, data iterator, metadata) under `directory`, keeping the last `keep_last`
    checkpoints plus the `keep_best` best by `best_metric` (`best_mode` "min" or "max"). With `read_only` it
    opens an existing directory to read metrics and restore (e.g. a finished run's best step); saving is refused."""

    def __init__(self, directory: str, meta: dict, *, keep_last: int = 3, keep_best: int = 0,
                 best_metric: Optional[str] = None, best_mode: str = "min", async_save: bool = True,
                 read_only: bool = False):
        if best_mode not in ("min", "max"):
            raise ValueError(f"checkpoint.best_mode must be 'min' or 'max', got {best_mode!r}.")
        self.directory = os.path.abspath(directory)
        self.meta = _jsonable(meta)
        self.read_only = bool(read_only)
        self.best_metric = best_metric if keep_best > 0 or read_only else None
        self.best_mode = best_mode
        if self.read_only:
            if not os.path.isdir(self.directory):
                raise FileNotFoundError(f"No checkpoint directory {self.directory} to read.")
            options = ocp.CheckpointManagerOptions(read_only=True)
        else:
            policy = _preservation(keep_last, keep_best, self.best_metric, best_mode)
            kwargs = dict(preservation_policy=policy) if policy is not None else dict(max_to_keep=keep_last)
            if policy is not None:  # orbax writes a step's metrics only with best_fn set: keep-best survives restarts
                kwargs.update(best_fn=_rank_fn(self.best_metric, best_mode), best_mode=best_mode)
            options = ocp.CheckpointManagerOptions(enable_async_checkpointing=async_save,
                                                   cleanup_tmp_directories=True, create=True, **kwargs)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def stored_metrics(self, metric: Optional[str] = None) -> dict[int, float]:
        """{kept step: value} of `metric` (default `best_metric`) as Orbax stored it with each step (non-finite
        values included); steps saved without it are absent. Waits for a save in flight first."""
        metric = metric or self.best_metric
        if metric is None:
            return {}
        self.manager.wait_until_finished()
        out = {}
        for step in sorted(self.manager.all_steps()):
            stored = self.manager.metrics(step)
            if stored and metric in stored:
                out[int(step)] = float(stored[metric])
        return out

    def best_step(self, metric: Optional[str] = None, mode: Optional[str] = None) -> Optional[int]:
        """The kept step with the best finite stored `metric` (default `best_metric`, `best_mode`); ties go to the
        earlier step; None when no kept step has a finite value. (Orbax's own manager.best_step() breaks ties
        toward the later step, leaves NaN's rank undefined and returns the latest step when no best_fn is set.)"""
        return best_of(self.stored_metrics(metric), mode or self.best_mode)

    def save(self, step: int, state: TrainState, data_iterator: Any = None, metrics: Optional[dict] = None,
             force: bool = False) -> bool:
        """Start saving `state` (and the iterator's current state) as `step`; returns False if already saved."""
        if self.read_only:
            raise RuntimeError(f"This Checkpointer of {self.directory} is read-only; it cannot save step {step}.")
        if step in self.manager.all_steps():
            return False
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta))
        if data_iterator is not None:
            items["data"] = grain_checkpoint.CheckpointSave(_IteratorState(data_iterator, capture=True))
        if self.best_metric is not None and metrics is not None and self.best_metric in metrics:
            metrics = {self.best_metric: float(metrics[self.best_metric])}
        else:
            metrics = None
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def check_compatible(self, step: int) -> None:
        """Raise CheckpointMismatchError if checkpoint `step` was written for another experiment or tree."""
        stored = self.read_meta(step)
        where = f"The checkpoint at step {step} in {self.directory}"
        advice = "use a new --workdir, or the config that wrote it."
        diff = _first_difference(stored.get("fingerprint", {}), self.meta.get("fingerprint", {}))
        if diff:
            raise CheckpointMismatchError(f"{where} belongs to a different experiment ({'fingerprint ' + diff}); "
                                          f"refusing to restore it: {advice}")
        diff = _first_difference(stored.get("trainable", {}), self.meta.get("trainable", {}))
        if diff:
            raise CheckpointMismatchError(f"{where} has a different trainable tree (parameter {diff}); "
                                          f"refusing to restore it: {advice}")

    def restore(self, step: int, abstract_state: TrainState, data_iterator: Any = None) -> TrainState:
        """Check compatibility, then restore the state into `abstract_state`'s shardings and the iterator in
        place."""
        self.check_compatible(step)
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        has_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if data_iterator is not None:
            if not has_data:
                raise CheckpointMismatchError(
                    f"The checkpoint at step {step} in {self.directory} has no data-iterator state, so the run "
                    "cannot resume exactly; use a new --workdir.")
            items["data"] = grain_checkpoint.CheckpointRestore(_IteratorState(data_iterator, capture=False))
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("Restored step %d from %s.", step, self.directory)
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
