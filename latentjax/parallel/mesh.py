"""Device meshes from config (axes data, fsdp, tensor; -1 = the rest), checked before anything is loaded.

With several hosts the mesh is hybrid: the hosts (processes on GPU/CPU, slices on multi-slice TPU) are spread over
the slowest axes first (data, then fsdp, then tensor), so the fast axes stay inside a host. Config form:

    config.mesh = dict(shape=dict(data=-1, fsdp=8, tensor=1), rules=dict(embed="fsdp", batch=["data", "fsdp"]))
    mesh, rules = mesh_from_config(config.mesh)
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh

from latentjax.models.config import DecoderConfig
from latentjax.parallel.rules import AUTO_AXES, DEFAULT_RULES, MESH_AXES, rules_from_config

log = logging.getLogger(__name__)

ShapeLike = Union[Sequence[int], Mapping[str, int]]


class MeshError(ValueError):
    """A mesh shape that does not fit the devices or the model."""


def shape_tuple(shape: ShapeLike) -> tuple[int, ...]:
    """(data, fsdp, tensor) from a sequence or a mapping by axis name (missing axes are 1)."""
    if isinstance(shape, Mapping) or hasattr(shape, "items"):
        shape = dict(shape.items())
        unknown = sorted(set(shape) - set(MESH_AXES))
        if unknown:
            raise MeshError(f"Unknown mesh axis {unknown[0]!r}; the mesh axes are {', '.join(MESH_AXES)}.")
        shape = [shape.get(a, 1) for a in MESH_AXES]
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise MeshError(f"Mesh shape {shape} must give one size per axis {MESH_AXES}.")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshError(f"Mesh shape {shape} has a size that is neither positive nor -1.")
    return shape


def resolve_shape(shape: ShapeLike, num_devices: int) -> tuple[int, ...]:
    """Replace the -1 (at most one) by what is left of `num_devices`; the product must equal it."""
    shape = list(shape_tuple(shape))
    if shape.count(-1) > 1:
        raise MeshError(f"Mesh shape {tuple(shape)} has more than one -1; at most one axis can take 'the rest'.")
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
        raise MeshError(f"Mesh shape {tuple(shape)} (axes {', '.join(MESH_AXES)}) does not divide the {num_devices} "
                        "devices; choose sizes whose product divides the device count.")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if math.prod(shape) != num_devices:
        raise MeshError(f"Mesh shape {tuple(shape)} uses {math.prod(shape)} devices but {num_devices} are present; "
                        "set one axis to -1 to take the rest.")
    return tuple(shape)


def split_over_hosts(shape: Sequence[int], num_hosts: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(per-host shape, across-host shape) with elementwise product `shape`: hosts go to the slowest axes first."""
    left, dcn = num_hosts, []
    for size in shape:
        d = math.gcd(size, left)
        dcn.append(d)
        left //= d
    if left != 1:
        raise MeshError(f"Mesh shape {tuple(shape)} cannot be laid over {num_hosts} hosts: the product of its "
                        f"sizes must be a multiple of the host count.")
    return tuple(s // d for s, d in zip(shape, dcn)), tuple(dcn)


def _host_groups(devices: Sequence[jax.Device]) -> tuple[str, int]:
    """How devices group into hosts: ('slice_index', n) on multi-slice TPU, else ('process_index', n)."""
    if devices[0].platform == "tpu":
        slices = {getattr(d, "slice_index", 0) for d in devices}
        return "slice_index", len(slices)
    return "process_index", len({d.process_index for d in devices})


def make_mesh(shape: ShapeLike = (-1, 1, 1), devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes over `devices` (default: all devices of all processes)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_shape(shape, len(devices))
    attr, hosts = _host_groups(devices)
    if hosts == 1:
        return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=AUTO_AXES)
    from jax.experimental import mesh_utils

    per_host, across = split_over_hosts(shape, hosts)
    if across[-1] > 1:
        log.warning("Mesh %s puts the tensor axis across %d hosts (%s per host): tensor parallelism over the "
                    "slow network is usually much slower than giving the hosts to data or fsdp.",
                    dict(zip(MESH_AXES, shape)), across[-1], dict(zip(MESH_AXES, per_host)))
    arr = mesh_utils.create_hybrid_device_mesh(per_host, across, devices,
                                               process_is_granule=attr == "process_index",
                                               allow_split_physical_axes=True)
    return Mesh(arr, MESH_AXES, axis_types=AUTO_AXES)


class MeshSetup(NamedTuple):
    mesh: Mesh
    rules: tuple


def mesh_from_config(cfg: Any = None, devices: Optional[Sequence[jax.Device]] = None) -> MeshSetup:
    """`(mesh, rules)` from `config.mesh`: a dict / ConfigDict with `shape` (sizes by axis name or a 3-sequence,
    -1 = the rest; default all devices on data) and optional `rules` (overrides of DEFAULT_RULES)."""
    cfg = {} if cfg is None else cfg
    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    unknown = sorted(set(cfg.keys()) - {"shape", "rules"}) if hasattr(cfg, "keys") else []
    if unknown:
        raise MeshError(f"Unknown key {unknown[0]!r} in the mesh config; it takes 'shape' and 'rules'.")
    rules_cfg = get("rules", None)
    rules = rules_from_config(dict(rules_cfg.items()) if rules_cfg is not None else None)
    return MeshSetup(make_mesh(get("shape", None) or (-1, 1, 1), devices), rules)


def _axis_sizes(mesh: Any) -> dict:
    if isinstance(mesh, Mapping):
        return dict(mesh)
    return dict(mesh.shape)


def _dims(config: DecoderConfig) -> dict[str, tuple[int, str]]:
    """logical axis -> (size, what it is) for every model dimension a rule may shard."""
    heads = (config.num_heads, "num_attention_heads")
    kv = (config.num_kv_heads, "num_key_value_heads")
    mlp = (config.intermediate_size, "intermediate_size")
    vocab = (config.vocab_size, "vocab_size")
    embed = (config.hidden_size, "hidden_size")
    return {"heads": heads, "act_heads": heads, "kv_heads": kv, "act_kv_heads": kv, "mlp": mlp, "act_mlp": mlp,
            "vocab": vocab, "act_vocab": vocab, "embed": embed, "act_embed": embed, "norm": embed,
            "head_dim": (config.head_dim, "head_dim"), "layers": (config.num_layers, "num_hidden_layers")}


def check_fits_mesh(dims: Mapping[str, tuple[int, str]], mesh: Any, rules=DEFAULT_RULES) -> None:
    """Fail when a dimension does not divide the mesh axes its logical name maps to. `dims` is
    {logical name: (size, what it is)}, e.g. {"bridge_mlp": (4096, "bridge mlp width")}; `mesh` is a Mesh, an
    AbstractMesh or a {axis: size} dict. Bridge and adapter code check their own dimensions with it."""
    sizes = _axis_sizes(mesh)
    table = dict(rules)
    for logical, (size, field) in dims.items():
        axes = table.get(logical)
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        missing = [a for a in axes if a not in sizes]
        if missing:
            raise MeshError(f"The rule {logical} -> {axes} names mesh axis {missing[0]!r}, which the mesh "
                            f"({', '.join(sizes)}) does not have.")
        n = math.prod(sizes[a] for a in axes)
        if size % n == 0:
            continue
        where = " x ".join(f"{a}={sizes[a]}" for a in axes)
        hint = f"pick a mesh whose {' x '.join(axes)} size divides {size}"
        if logical in ("kv_heads", "act_kv_heads"):
            hint += (" (grouped-query models have few KV heads), or keep the KV heads whole with the rules "
                     "override {'kv_heads': None, 'act_kv_heads': None}")
        else:
            hint += f", or override the rule for {logical!r}"
        raise MeshError(f"The model's {field}={size} ({logical!r}) cannot be split over mesh axes {where}: {hint}.")


def check_model_fits_mesh(config: DecoderConfig, mesh: Any, rules=DEFAULT_RULES) -> None:
    """Fail before loading when a sharded decoder dimension (heads, KV heads, mlp, vocab, embed, ...) does not
    divide its mesh axes."""
    check_fits_mesh(_dims(config), mesh, rules)


def check_batch_fits_mesh(batch_size: int, mesh: Any, rules=DEFAULT_RULES) -> None:
    """The global batch must split evenly over the mesh axes of the `batch` rule."""
    axes = dict(rules).get("batch")
    if axes is None:
        return
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    sizes = _axis_sizes(mesh)
    n = math.prod(sizes[a] for a in axes)
    if batch_size % n:
        raise MeshError(f"The global batch size {batch_size} does not split over the batch mesh axes "
                        f"{' x '.join(f'{a}={sizes[a]}' for a in axes)}; use a multiple of {n}.")


def describe(mesh: Mesh) -> str:
    """'data=2 fsdp=4 tensor=1 over 8 devices, 2 processes' (for logs)."""
    procs = len({d.process_index for d in np.ravel(mesh.devices)})
    axes = " ".join(f"{a}={n}" for a, n in mesh.shape.items())
    return f"{axes} over {mesh.size} devices, {procs} process{'es' if procs > 1 else ''}"
