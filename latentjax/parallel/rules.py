"""The one table that maps logical axis names to mesh axes, and the helpers that turn names into shardings.

Model, bridge and LoRA code only name axes (`embed`, `heads`, `lora_rank`, ...). Changing a parallelism strategy
is an edit of this table (or of `config.mesh.rules`), never of model code.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# Auto axes: XLA propagates shardings from the ones we state (params, inputs, logical constraints).
AUTO_AXES = (jax.sharding.AxisType.Auto,) * 3

# logical name -> mesh axis (or tuple of mesh axes, or None for replicated)
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("lora_rank", None),
    ("bridge_in", "fsdp"),
    ("bridge_width", None),
    ("bridge_heads", "tensor"),
    ("bridge_mlp", "tensor"),
    ("bridge_latents", None),
    ("bridge_out", "fsdp"),
    ("bridge_code", None),
    ("scalar", None),
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def rules_from_config(overrides: Optional[dict] = None) -> tuple[tuple[str, Any], ...]:
    """DEFAULT_RULES with entries replaced by `overrides` ({logical: mesh axis | list of mesh axes | None})."""
    table = dict(DEFAULT_RULES)
    for key, value in (dict(overrides.items()) if overrides else {}).items():
        if key not in table:
            raise KeyError(f"Unknown logical axis {key!r} in sharding rules; known axes: {', '.join(table)}.")
        value = tuple(value) if isinstance(value, (list, tuple)) else value
        named = (value,) if isinstance(value, str) else (value or ())
        bad = [a for a in named if a not in MESH_AXES]
        if bad:
            raise ValueError(f"Sharding rule {key} -> {value!r} names {bad[0]!r}, which is not a mesh axis "
                             f"({', '.join(MESH_AXES)}); use one of those, a list of them, or None.")
        if len(set(named)) != len(named):
            raise ValueError(f"Sharding rule {key} -> {value!r} repeats a mesh axis.")
        table[key] = value
    return tuple(table.items())


def logical_spec(names: Sequence[Optional[str]], rules=DEFAULT_RULES) -> P:
    return nn.logical_to_mesh_axes(tuple(names), rules)


def logical_sharding(names: Sequence[Optional[str]], mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_spec(names, rules))


def logical_axes_of(boxed_tree: Any) -> Any:
    """Tree of logical PartitionSpecs from a tree of `nn.Partitioned` boxes (e.g. `jax.eval_shape(init)`)."""
    return nn.get_partition_spec(boxed_tree)


def shardings_of(boxed_tree: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Tree of NamedShardings for a tree of `nn.Partitioned` boxes (unboxed leaves are replicated)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def opt_state_shardings(optimizer: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for `optimizer.init(params)`: every leaf that mirrors a parameter (Adam moments, ...) takes that
    parameter's sharding; the rest (step counts, scalars) is replicated. `params` may be abstract."""
    import optax

    state = jax.eval_shape(optimizer.init, params)
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731  (optax.masked leaves these for skipped params)
    return optax.tree_map_params(optimizer, lambda x, sharding: x if masked(x) else sharding, state,
                                 param_shardings, transform_non_params=lambda _: replicated(mesh), is_leaf=masked)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def single_device_mesh() -> Mesh:
    return jax.make_mesh((1, 1, 1), MESH_AXES, devices=jax.devices()[:1], axis_types=AUTO_AXES)


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Leading axis over the batch mesh axes, the rest replicated."""
    return logical_sharding(("batch",) + (None,) * (ndim - 1), mesh, rules)


def unbox(tree: Iterable) -> Any:
    return nn.meta.unbox(tree)


axis_rules = nn.logical_axis_rules


@contextlib.contextmanager
def activate(mesh: Mesh, rules=DEFAULT_RULES):
    """Mesh and logical rules in force for tracing: activation constraints inside models resolve against them."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
