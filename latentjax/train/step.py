"""The jitted train step: gradients of the trainable params only, in-step gradient accumulation, stated shardings.

`make_train_step` is the one way any experiment (bridge, translator, LoRA, tests of the sharding issue) builds a
step; it runs unchanged on one device, on a multi-device mesh and across processes.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from latentjax.parallel import distributed
from latentjax.parallel import rules as rules_lib
from latentjax.train.state import TrainState, cast_floating

DEFAULT_BATCH_AXES = ("batch",)


def batch_shardings(keys, mesh: Mesh, rules=rules_lib.DEFAULT_RULES,
                    batch_axes: Optional[Mapping[str, tuple]] = None) -> dict:
    """{key: NamedSharding} from each entry's logical names (default: leading axis over "batch", rest replicated)."""
    batch_axes = batch_axes or {}
    return {k: rules_lib.logical_sharding(tuple(batch_axes.get(k, DEFAULT_BATCH_AXES)), mesh, rules)
            for k in keys}


def _microbatches(x: jax.Array, n: int, sharding: Optional[NamedSharding]) -> jax.Array:
    """[B, ...] -> [n, B/n, ...] with microbatch i = rows i, i+n, i+2n, ...: each device keeps its own rows, so
    splitting needs no communication when the per-device batch divides by n."""
    b = x.shape[0]
    if b % n:
        raise ValueError(f"Batch of {b} rows does not divide into grad_accum={n} microbatches.")
    x = jnp.swapaxes(x.reshape((b // n, n) + x.shape[1:]), 0, 1)
    if sharding is not None:
        spec = jax.sharding.PartitionSpec(None, *sharding.spec)
        x = jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, spec))
    return x


def train_step_fn(loss_fn: Callable, optimizer: optax.GradientTransformation, grad_accum: int = 1,
                  learning_rate_fn: Optional[optax.Schedule] = None, compute_dtype: Optional[Any] = None,
                  batch_sharding: Optional[Mapping[str, NamedSharding]] = None) -> Callable:
    """The pure step `(state, frozen, batch) -> (state, metrics)` (not jitted; `make_train_step` jits it).

    The loss is differentiated w.r.t. the trainable params only. With `compute_dtype` the floating trainable params
    are cast (e.g. to bfloat16) inside the differentiated function, so gradients and master params stay float32.
    With `grad_accum` = n > 1 the batch is split into n microbatches scanned in sequence; the update uses the mean
    of their gradients, which equals the gradient of the mean loss over the whole batch when `loss_fn` is a mean
    over equally weighted rows. Metrics are averaged over microbatches.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}.")

    def grads_of(params, frozen, batch, rng):
        def loss_of(p):
            if compute_dtype is not None:
                p = cast_floating(p, compute_dtype)
            loss, metrics = loss_fn(p, frozen, batch, rng)
            metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
            return jnp.asarray(loss, jnp.float32), metrics

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return loss, metrics, grads

    def step(state: TrainState, frozen: Any, batch: Mapping[str, jax.Array]):
        rng, step_rng = jax.random.split(state.rng)
        if grad_accum == 1:
            loss, metrics, grads = grads_of(state.params, frozen, batch, step_rng)
        else:
            micro = {k: _microbatches(v, grad_accum, (batch_sharding or {}).get(k)) for k, v in batch.items()}
            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grads_of, state.params, frozen, first, step_rng)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

            def body(acc, xs):
                mb, i = xs
                out = grads_of(state.params, frozen, mb, jax.random.fold_in(step_rng, i))
                return jax.tree.map(jnp.add, acc, out), None

            total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
            loss, metrics, grads = jax.tree.map(lambda x: x / grad_accum, total)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        if learning_rate_fn is not None:
            metrics["lr"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    return step


class TrainStep:
    """A jitted train step with stated shardings. Call it as `state, metrics = step(state, frozen, batch)`; host
    numpy batches (this process's rows) are placed on the mesh first (`distributed.global_batch`); global
    jax Arrays are passed as they are. The input state is donated."""

    def __init__(self, loss_fn, optimizer, mesh, rules, state_shardings, batch_axes, grad_accum=1, *,
                 learning_rate_fn=None, compute_dtype=None, frozen_shardings=None, donate=True,
                 compiler_options=None):
        self.mesh, self.rules = mesh, rules
        self.state_shardings = state_shardings
        self.batch_axes = dict(batch_axes or {})
        self.grad_accum = int(grad_accum)
        self.frozen_shardings = frozen_shardings
        self._args = (loss_fn, optimizer, self.grad_accum, learning_rate_fn, compute_dtype)
        self._donate = donate
        self._compiler_options = dict(compiler_options) if compiler_options else None
        self._jitted: dict = {}

    def batch_shardings(self, keys) -> dict:
        return batch_shardings(keys, self.mesh, self.rules, self.batch_axes)

    def jitted(self, frozen: Any, keys) -> Callable:
        """The jitted function for a batch with these keys (compiled on first call)."""
        keys = tuple(sorted(keys))
        if keys not in self._jitted:
            b_sh = self.batch_shardings(keys)
            f_sh = self.frozen_shardings
            if f_sh is None:
                rep = rules_lib.replicated(self.mesh)
                f_sh = jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array) else rep, frozen)
            fn = train_step_fn(*self._args, batch_sharding=b_sh)
            self._jitted[keys] = jax.jit(
                fn, in_shardings=(self.state_shardings, f_sh, b_sh),
                out_shardings=(self.state_shardings, rules_lib.replicated(self.mesh)),
                donate_argnums=(0,) if self._donate else (), compiler_options=self._compiler_options)
        return self._jitted[keys]

    def __call__(self, state: TrainState, frozen: Any, batch: Mapping[str, Any]):
        if not all(isinstance(v, jax.Array) for v in batch.values()):  # host rows -> global arrays
            batch = distributed.global_batch(batch, self.mesh, self.rules, self.batch_axes)
        with rules_lib.activate(self.mesh, self.rules):
            return self.jitted(frozen, batch.keys())(state, frozen, batch)


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, mesh: Mesh, rules,
                    state_shardings: TrainState, batch_axes: Optional[Mapping[str, tuple]] = None,
                    grad_accum: int = 1, *, learning_rate_fn: Optional[optax.Schedule] = None,
                    compute_dtype: Optional[Any] = None, frozen_shardings: Any = None,
                    donate: bool = True, compiler_options: Optional[Mapping[str, Any]] = None) -> TrainStep:
    """Build the jitted step `(state, frozen, batch) -> (state, metrics)`.

    loss_fn: `(trainable, frozen, batch, rng) -> (scalar loss, metrics dict)` (the Experiment's).
    optimizer: from `latentjax.train.optimizer.make_optimizer` (or any optax transformation).
    mesh, rules: the device mesh and logical-axis rules (`rules.rules_from_config(config.mesh.rules)`).
    state_shardings: `latentjax.train.state.state_shardings(...)`; the step's state in/out shardings.
    batch_axes: logical names of each batch entry's leading dims (missing keys: ("batch",)).
    grad_accum: microbatches per step, scanned inside the jitted step (mean of gradients).
    learning_rate_fn: when given, the step reports `lr` for the update it applied.
    compute_dtype: cast floating trainable params to this dtype for the forward/backward (float32 masters).
    frozen_shardings: shardings of the frozen params (default: the shardings the frozen arrays already have).
    compiler_options: XLA options for this step's compile only (e.g. `command_buffer_options(False)`).
    """
    return TrainStep(loss_fn, optimizer, mesh, rules, state_shardings, batch_axes, grad_accum,
                     learning_rate_fn=learning_rate_fn, compute_dtype=compute_dtype,
                     frozen_shardings=frozen_shardings, donate=donate, compiler_options=compiler_options)


# The training loop's default (`train.xla_command_buffers`). Measured on an H100 (BUILD_NOTES, Performance): the
# per-layer 8B LoRA step runs a steady 141 ms without GPU command buffers and 138-165 ms from step to step with them
# (XLA re-records its CUDA graphs whenever the step's buffers move); scanned LoRA steps 1-2% slower without them.
TRAIN_COMMAND_BUFFERS = False
# Steps that train a small module between two frozen models (telepathy bridge, translator configs): with command
# buffers the 8B bridge step ran 46.5-46.8 vs 47.5-48.9 ms at batch 8 (45.8-45.9 vs 46.6-46.9 at the loop rate)
# and 331 vs 336 ms at batch 64 (H100, session 13, same process; session 5's older stack had found them slower).
FROZEN_PAIR_COMMAND_BUFFERS = True


def command_buffer_options(enabled: bool = TRAIN_COMMAND_BUFFERS) -> Optional[dict]:
    """XLA compiler options for a step with (None: XLA's default) or without GPU command buffers (CUDA graphs).
    Other backends ignore the option."""
    return None if enabled else {"xla_gpu_enable_command_buffer": ""}
