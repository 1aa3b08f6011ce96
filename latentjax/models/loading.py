"""Load HF safetensors checkpoints (single file or sharded) straight into sharded JAX arrays.

Each parameter is built with `jax.make_array_from_callback`: every device's slice is read from the file with
safetensors' sliced reads, so a process only reads what its devices hold. Per-layer tensors go to the devices one
layer at a time and are stacked there, so host memory holds at most one layer's slice of one weight at a time.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can read bf16 slices)
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import NamedSharding, PartitionSpec as P
from safetensors import safe_open

from latentjax.models.config import DecoderConfig
from latentjax.models.hf_map import IGNORED_SUFFIXES, Entry, entries


class CheckpointError(ValueError):
    """A checkpoint folder that does not hold the weights its config describes."""


def weight_files(path: str) -> dict[str, str]:
    """Map every tensor name to the safetensors file holding it."""
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {name: os.path.join(path, fname) for name, fname in weight_map.items()}
        missing = sorted({f for f in files.values() if not os.path.exists(f)})
        if missing:
            raise CheckpointError(
                f"{index} lists shard(s) that are not on disk: {', '.join(os.path.basename(m) for m in missing)}; "
                "download the complete checkpoint.")
        return files
    if os.path.exists(single):
        with safe_open(single, "numpy") as f:
            return {name: single for name in f.keys()}
    if any(n.endswith((".bin", ".pt", ".pth")) for n in os.listdir(path)):
        raise CheckpointError(
            f"{path} holds only PyTorch pickle weights; latentjax reads safetensors. Re-save the model with "
            "`save_pretrained(..., safe_serialization=True)`.")
    raise CheckpointError(f"No model.safetensors or model.safetensors.index.json in {path}.")


class _Reader:
    """Keeps safetensors files open for the duration of one load."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self._open: dict[str, Any] = {}

    def slice(self, key: str):
        fname = self.files[key]
        if fname not in self._open:
            self._open[fname] = safe_open(fname, "numpy")
        return self._open[fname].get_slice(key)

    def shape(self, key: str) -> tuple:
        return tuple(self.slice(key).get_shape())


def _expected_hf_shape(entry: Entry, shape: tuple) -> tuple:
    shape = shape[1:] if entry.stacked else shape
    return tuple(reversed(shape)) if entry.transpose else tuple(shape)


def _place_hf(reader: _Reader, key: str, hf_shape: tuple, sharding, dtype) -> jax.Array:
    """One checkpoint tensor as a global array; each device's callback reads only its own slice."""

    def callback(index):
        index = tuple(index) + (slice(None),) * (len(hf_shape) - len(index))
        index = tuple(slice(*s.indices(n)) for s, n in zip(index, hf_shape))
        return np.asarray(reader.slice(key)[index] if index else reader.slice(key)[:], dtype=dtype)

    return jax.make_array_from_callback(hf_shape, sharding, callback)


@functools.lru_cache(maxsize=None)
def _assemble(sharding, transpose: bool, stacked: bool):
    def assemble(*pieces):
        pieces = [p.T if transpose else p for p in pieces]
        return jnp.stack(pieces) if stacked else pieces[0]

    return jax.jit(assemble, out_shardings=sharding)


def load_params(path: str, config: DecoderConfig, abstract_params: Any, shardings: Any,
                dtype: Optional[str] = None) -> Any:
    """Read the checkpoint at `path` into a params tree shaped like `abstract_params`, placed by `shardings`."""
    files = weight_files(path)
    reader = _Reader(files)
    target_dtype = np.dtype(dtype or config.param_dtype)
    flat_abstract = flatten_dict(abstract_params)
    flat_shardings = flatten_dict(shardings)
    table = entries(config)
    used: set[str] = set()
    flat_out = {}
    for entry in table:
        if entry.path not in flat_abstract:
            raise CheckpointError(f"Internal map error: {entry.path} is not a decoder parameter.")
        shape = tuple(flat_abstract[entry.path].shape)
        keys = [entry.hf_key(i) for i in range(shape[0])] if entry.stacked else [entry.hf_key()]
        want = _expected_hf_shape(entry, shape)
        for key in keys:
            if key not in files:
                raise CheckpointError(
                    f"Weight {key!r} is missing from {path}; the checkpoint does not match its config.json "
                    f"(expected {config.num_layers} layers, tie_word_embeddings={config.tie_word_embeddings}).")
            got = reader.shape(key)
            if got != want:
                raise CheckpointError(
                    f"Weight {key!r} has shape {got} but config.json implies {want}; the weights and config.json "
                    "in this folder come from different models.")
            used.add(key)
        sharding = flat_shardings[entry.path]
        # Tensors go to the devices in HF layout, one layer at a time, and are transposed and stacked there: the
        # host never transposes and holds at most one layer's slice of one weight.
        spec = tuple(sharding.spec) + (None,) * (len(shape) - len(tuple(sharding.spec)))
        per_layer = spec[1:] if entry.stacked else spec
        hf_sharding = NamedSharding(sharding.mesh, P(*(reversed(per_layer) if entry.transpose else per_layer)))
        pieces = [_place_hf(reader, key, reader.shape(key), hf_sharding, target_dtype) for key in keys]
        flat_out[entry.path] = _assemble(sharding, entry.transpose, entry.stacked)(*pieces)
        del pieces
    unexpected = sorted(k for k in files if k not in used and not k.endswith(IGNORED_SUFFIXES))
    if unexpected:
        raise CheckpointError(
            f"{path} has {len(unexpected)} weight(s) a {config.model_type} decoder does not use (first: "
            f"{unexpected[0]!r}); it is probably another architecture or has an adapter merged in by name.")
    return unflatten_dict(flat_out)
