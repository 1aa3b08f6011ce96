"""The contract between an experiment family (bridge, translator, LoRA SFT, ...) and the one training loop.

An experiment builder turns a config into an `Experiment`; the loop in `latentjax.train.loop` does the rest
(optimizer, jitted step, sharding, checkpoints, metrics, evaluation hooks). No experiment writes its own loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

import jax

Params = Any
Batch = dict  # str -> array, leading axis = global batch
Metrics = dict  # str -> scalar array


class LossFn(Protocol):
    def __call__(self, trainable: Params, frozen: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        """Mean loss over the batch (a scalar) and metrics to log. Pure and jittable."""


@dataclasses.dataclass
class Experiment:
    """Everything the loop needs from an experiment family."""

    # rng -> trainable params (float32). May return `nn.Partitioned` boxes carrying logical axis names; the loop
    # reads the names to shard params and optimizer state, then unboxes.
    init_trainable: Callable[[jax.Array], Params]
    # Frozen weights (already placed on the mesh). Passed to every step, never differentiated or checkpointed.
    frozen: Params
    loss_fn: LossFn
    # A grain iterator (or anything with get_state/set_state and __next__) yielding host numpy batches.
    train_data: Any
    # Logical axis names of each batch entry's leading dims, e.g. {"input_ids": ("batch", "length")}.
    batch_axes: dict = dataclasses.field(default_factory=dict)
    # Called every `eval_every` steps with (trainable, step) -> metrics dict (and may write files).
    eval_fn: Optional[Callable[[Params, int], Metrics]] = None
    # Identifies what the trainable params belong to (base model, shapes); a checkpoint written for a different
    # fingerprint is refused on restore.
    fingerprint: dict = dataclasses.field(default_factory=dict)
    # Pytree of bools like the trainable params: True where weight decay applies (None = all matrices).
    decay_mask: Optional[Callable[[Params], Any]] = None
