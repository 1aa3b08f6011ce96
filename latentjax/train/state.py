"""The train state (trainable params, optimizer state, step, PRNG) and its shardings.

Frozen weights are not part of the state: they are passed to the step separately, never differentiated, never given
optimizer state and never checkpointed. Trainable params are float32 master copies; optimizer-state shardings
follow the params they belong to (optax.tree_map_params), everything else in the state is replicated.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from latentjax.parallel import rules as rules_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of optimizer updates done
    params: Any  # trainable params, float32
    opt_state: Any
    rng: jax.Array  # uint32[2] PRNG key data; split once per step


def to_float32(tree: Any) -> Any:
    """Floating leaves as float32 (master copies); integer leaves untouched."""
    return cast_floating(tree, jnp.float32)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Floating-point leaves cast to `dtype` (a no-op for leaves already in it)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _init_fn(init_trainable: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation):
    def init(seed_key: jax.Array) -> TrainState:
        init_key, state_key = jax.random.split(seed_key)
        params = to_float32(rules_lib.unbox(init_trainable(init_key)))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                          rng=state_key)
    return init


def state_shardings(init_trainable: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                    mesh: Mesh, rules=rules_lib.DEFAULT_RULES) -> TrainState:
    """A TrainState of NamedShardings: params from their logical names (nn.Partitioned boxes returned by
    `init_trainable`; unboxed leaves are replicated), optimizer moments like their params (rules.opt_state_shardings), the rest replicated."""
    boxed = jax.eval_shape(init_trainable, jax.random.PRNGKey(0))
    param_sh = rules_lib.shardings_of(boxed, mesh, rules)
    params = abstract_state(init_trainable, optimizer).params
    opt_sh = rules_lib.opt_state_shardings(optimizer, params, param_sh, mesh)
    rep = rules_lib.replicated(mesh)
    return TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep)


def abstract_state(init_trainable: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                   shardings: Any = None) -> TrainState:
    """Shapes and dtypes of the state without allocating it (with `shardings` attached when given)."""
    abstract = jax.eval_shape(_init_fn(init_trainable, optimizer), jax.random.PRNGKey(0))
    if shardings is None:
        return abstract
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def init_state(init_trainable: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation, seed: int,
               shardings: TrainState, mesh: Mesh, rules=rules_lib.DEFAULT_RULES) -> TrainState:
    """A fresh state created directly in its shardings. The seed determines params and the step PRNG stream."""
    with rules_lib.activate(mesh, rules):
        return jax.jit(_init_fn(init_trainable, optimizer), out_shardings=shardings)(jax.random.PRNGKey(seed))
