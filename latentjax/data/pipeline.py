"""Deterministic, sharded, checkpointable input pipelines on grain's dataset API.

    loader = make_loader(load_split("sst2", "train"), batch_size=32, seed=0, transforms=[...])
    it = iter(loader)          # a grain.DatasetIterator: next(it) -> dict of numpy arrays
    state = it.get_state()     # small JSON-able dict; it.set_state(state) resumes exactly there

The pipeline is `MapDataset.source(rows).seed(seed).shuffle().repeat(num_epochs)`, then every process keeps the
positions `process_index::num_processes` of that one global stream (after the lazy `transforms`), batches, reads
ahead with `ReadOptions` threads (`to_iter_dataset`), and optionally prefetches in `worker_count` processes
(`mp_prefetch`). Hence:

* Same seed, same order. The shuffle is grain's index shuffle with a seed grain derives from `seed`
  (`ds.seed`), re-drawn each epoch from (derived seed + epoch), so every epoch has a new order.
* `batch_size` is the global batch size: each process yields `batch_size // num_processes` rows, and global
  batch j (the union over processes) is exactly positions [j*batch_size, (j+1)*batch_size) of the global shuffled
  stream, whatever the number of processes. Shards are disjoint and together complete. With a finite
  `num_epochs` and `drop_remainder=True` the stream is cut to whole global batches, so every process yields the
  same number of batches (needed by multi-host training); with `drop_remainder=False` nothing is dropped but
  the last batches may be short and their number may differ by one between processes.
* Per-example randomness (`grain.transforms.RandomMap`) is seeded from `seed` and the element's position in the
  global stream, so it too is the same for any number of processes, and differs between epochs.

Checkpointing. The iterator state is grain's own (`it.get_state()` / `it.set_state(state)`, a small JSON-able dict).
For an Orbax checkpoint put the iterator itself into the Composite, beside the model state::

    import grain, orbax.checkpoint as ocp
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state),
                                            data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                               data=grain.checkpoint.CheckpointRestore(it)))

`grain.checkpoint.CheckpointSave/CheckpointRestore` (grain's `CheckpointHandler`) write and read one
`process_<i>-of-<n>.json` per JAX process; restore calls `it.set_state` in place on a fresh iterator of an
identically built loader. Restoring with another number of processes is not supported (each file holds that
process's position only).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import grain
from absl import flags

_GRAIN_TRANSFORMS = (grain.transforms.Map, grain.transforms.RandomMap, grain.transforms.MapWithIndex,
                     grain.transforms.Filter, grain.experimental.FlatMapTransform)

_SPARSE = (grain.transforms.Filter, grain.experimental.FlatMapTransform)
# Threads and buffer (in batches) for the usual case where batches are formed before reading.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=8, prefetch_buffer_size=16)

Transform = Union[grain.transforms.Map, grain.transforms.RandomMap, grain.transforms.MapWithIndex,
                  grain.transforms.Filter, Callable[[Any], Any]]


def process_shard(num_processes: Optional[int] = None, process_index: Optional[int] = None) -> tuple[int, int]:
    """(process_index, num_processes), from JAX (`grain.sharding.ShardByJaxProcess`) unless both are given."""
    if num_processes is None and process_index is None:
        opts = grain.sharding.ShardByJaxProcess()
        return opts.shard_index, opts.shard_count
    if num_processes is None or process_index is None:
        raise ValueError("Give both num_processes and process_index, or neither.")
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} is not in [0, {num_processes}).")
    return process_index, num_processes


def apply_transforms(ds, transforms: Sequence[Transform]):
    """Apply grain transforms (Map, RandomMap, MapWithIndex, Filter, FlatMap) or plain functions (as maps)."""
    for t in transforms:
        ds = ds.apply(t) if isinstance(t, _GRAIN_TRANSFORMS) else ds.map(t)
    return ds


def make_loader(source: Any, batch_size: int, seed: int, *, transforms: Sequence[Transform] = (),
                shuffle: bool = True, num_epochs: Optional[int] = None, drop_remainder: bool = True,
                shard_by_process: bool = True, num_processes: Optional[int] = None,
                process_index: Optional[int] = None, batch_fn: Optional[Callable[[Sequence[Any]], Any]] = None,
                worker_count: int = 0, worker_buffer_size: int = 1,
                read_options: Optional[grain.ReadOptions] = None) -> grain.IterDataset:
    """A grain `IterDataset` of batches (dicts of numpy arrays); `iter()` it for a checkpointable iterator.

    Args:
      source: a `datasets.Dataset`, any random-access sequence of rows (len + getitem), or a `grain.MapDataset`.
      batch_size: the global batch size (over all processes); must be divisible by the number of processes.
      seed: seeds the shuffle and any RandomMap transforms (0 <= seed < 2**32).
      transforms: applied per example, in order, after shuffling (see `apply_transforms`); each process only
        computes its own examples. A Filter/FlatMap makes the number of batches per process uneven.
      shuffle: shuffle with a new order each epoch.
      num_epochs: passes over the data; None repeats forever.
      drop_remainder: drop a final partial batch (with finite `num_epochs`: cut to whole global batches).
      shard_by_process: give each process its own part; if False every process reads the whole stream and
        yields `batch_size` rows.
      num_processes, process_index: override JAX's process count/index (tests, or custom layouts).
      batch_fn: turns a list of examples into a batch (default: stack every leaf), e.g. `transforms.PadBatch`
        for per-batch padding to a bucket length.
      worker_count: >0 runs the pipeline in that many worker processes (`mp_prefetch`). The batches do not
        depend on worker_count unless a Filter/FlatMap transform is used (then batches are formed per worker).
      worker_buffer_size: batches each worker keeps ready.
      read_options: threads and buffer for reading and transforming (default `DEFAULT_READ_OPTIONS`, counted
        in batches; with a Filter/FlatMap transform grain's default, counted in examples).
    """
    index, count = process_shard(num_processes, process_index) if shard_by_process else (0, 1)
    if batch_size % count:
        raise ValueError(f"batch_size={batch_size} is not divisible by the {count} processes.")
    local_batch = batch_size // count
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    if len(ds) == 0:
        raise ValueError("The data source is empty.")
    ds = ds.seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = apply_transforms(ds.repeat(num_epochs), transforms)  # before sharding: lazy, and seeded by global position
    if num_epochs is not None and drop_remainder:
        ds = ds[: len(ds) // batch_size * batch_size]
        if len(ds) == 0:
            raise ValueError(f"{num_epochs} epoch(s) of {len(source)} rows are less than one batch of {batch_size}.")
    if count > 1:
        ds = ds[index::count]
    if any(isinstance(t, _SPARSE) for t in transforms):  # batch after dropping elements, in the reading process
        ds = ds.to_iter_dataset(read_options).batch(local_batch, drop_remainder=drop_remainder, batch_fn=batch_fn)
    else:  # batch by position: each batch is a fixed set of positions, whatever the threads or workers
        ds = ds.batch(local_batch, drop_remainder=drop_remainder, batch_fn=batch_fn)
        ds = ds.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS)
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside absl.app take the defaults
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=worker_buffer_size))
    return ds


__all__ = ["DEFAULT_READ_OPTIONS", "apply_transforms", "make_loader", "process_shard"]
