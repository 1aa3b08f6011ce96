"""Device meshes from config (axes data, fsdp, tensor; -1 = the rest), checked before anything is loaded."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
from jax.sharding import Mesh

from latentjax.models.config import DecoderConfig
from latentjax.parallel.rules import AUTO_AXES, DEFAULT_RULES, MESH_AXES


class MeshError(ValueError):
    """A mesh shape that does not fit the devices or the model."""


def resolve_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    shape = list(shape)
    if shape.count(-1) > 1:
        raise MeshError(f"Mesh shape {tuple(shape)} has more than one -1; at most one axis can take 'the rest'.")
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or num_devices % known:
        raise MeshError(f"Mesh shape {tuple(shape)} (axes {MESH_AXES}) does not divide the {num_devices} devices; "
                        "choose sizes whose product divides the device count.")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if math.prod(shape) != num_devices:
        raise MeshError(f"Mesh shape {tuple(shape)} uses {math.prod(shape)} devices but {num_devices} are present; "
                        "set one axis to -1 to take the rest.")
    return tuple(shape)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (data, fsdp, tensor) mesh. With several processes the data axis spans hosts (hybrid mesh)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_shape(shape, len(devices))
    if jax.process_count() > 1 and devices == jax.devices():
        from jax.experimental import mesh_utils

        per_host = len(devices) // jax.process_count()
        data = shape[0]
        if data % jax.process_count() == 0:
            ici = (data // jax.process_count(), shape[1], shape[2])
            dcn = (jax.process_count(), 1, 1)
            arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
            return Mesh(arr, MESH_AXES, axis_types=AUTO_AXES)
        if math.prod(shape[1:]) > per_host:
            raise MeshError(f"fsdp x tensor = {shape[1] * shape[2]} spans more than one host's {per_host} devices "
                            "and the data axis does not divide the process count; give the data axis the hosts.")
    return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=AUTO_AXES)


def check_model_fits_mesh(config: DecoderConfig, mesh: Mesh, rules=DEFAULT_RULES) -> None:
    """Fail before loading when a sharded dimension does not divide its mesh axes."""
    table = dict(rules)
    dims = {"heads": config.num_heads, "kv_heads": config.num_kv_heads, "mlp": config.intermediate_size,
            "vocab": config.vocab_size, "embed": config.hidden_size}
    for logical, size in dims.items():
        axes = table.get(logical)
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        n = math.prod(mesh.shape[a] for a in axes)
        if size % n:
            raise MeshError(f"Model dimension {logical}={size} does not divide mesh axes {axes} of size {n}; "
                            f"pick a mesh whose {'/'.join(axes)} size divides {size}.")
