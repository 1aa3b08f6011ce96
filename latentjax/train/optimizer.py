"""AdamW with warmup and cosine / linear / constant decay, global-norm clipping and a weight-decay mask.

Gradient accumulation is not an optimizer wrapper here: the train step scans over microbatches and hands the mean
gradient to the optimizer once (see `latentjax.train.step`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import optax
from ml_collections import ConfigDict

DECAYS = ("cosine", "linear", "constant")


def make_schedule(opt: ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `opt.lr` over `opt.warmup_steps`, then decay to `opt.lr * opt.end_lr_ratio` at
    `total_steps` (cosine or linear), or stay at `opt.lr` (constant)."""
    lr, warmup = float(opt.lr), int(opt.warmup_steps)
    end = lr * float(opt.end_lr_ratio)
    decay_steps = max(int(total_steps) - warmup, 1)
    if opt.decay == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(opt.end_lr_ratio))
    elif opt.decay == "linear":
        after = optax.linear_schedule(lr, end, decay_steps)
    elif opt.decay == "constant":
        after = optax.constant_schedule(lr)
    else:
        raise ValueError(f"optimizer.decay must be one of {DECAYS}, got {opt.decay!r}.")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def default_decay_mask(params: Any) -> Any:
    """Weight decay on matrices (ndim >= 2) only: not on norms, biases or scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt: ConfigDict, total_steps: int,
                   decay_mask: Optional[Callable[[Any], Any]] = None) -> tuple[optax.GradientTransformation,
                                                                               optax.Schedule]:
    """(optimizer, learning-rate schedule) for the trainable params."""
    schedule = make_schedule(opt, total_steps)
    parts = []
    if opt.clip_norm and float(opt.clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(opt.clip_norm)))
    parts.append(optax.adamw(schedule, b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps),
                             weight_decay=float(opt.weight_decay), mask=decay_mask or default_decay_mask))
    return optax.chain(*parts), schedule
