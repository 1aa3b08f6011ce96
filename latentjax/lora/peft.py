"""Hugging Face PEFT adapters (adapter_config.json + adapter_model.safetensors) out of and into latentjax.

Key names and layouts come from the one checkpoint map, `latentjax.models.hf_map`: the base weight
`model.layers.{i}.self_attn.q_proj.weight` ([out, in], our kernel [in, out] transposed) gives the adapter keys
`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` ([r, in]) and `...lora_B.weight` ([out, r]).
PEFT computes W' = W + scale * B A with scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for bf16 safetensors)
import numpy as np
from jax.sharding import Mesh

from latentjax.lora.adapter import abstract_lora, lora_shardings, lora_targets
from latentjax.lora.config import ALL_PROJECTIONS, LoraConfig
from latentjax.models.config import DecoderConfig
from latentjax.models.hf_map import LAYER_PROJECTIONS, Entry, entries
from latentjax.parallel import rules as rules_lib

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
FACTORS = ("lora_A", "lora_B")


class PeftFormatError(ValueError):
    """An adapter folder latentjax cannot read faithfully."""


def _kernel_entries(config: DecoderConfig) -> dict[str, Entry]:
    """proj -> the hf_map entry of its (stacked) kernel."""
    by_path = {e.path: e for e in entries(config)}
    return {proj: by_path[("layers", block, proj, "kernel")] for proj, block in LAYER_PROJECTIONS.items()}


def peft_key(entry: Entry, layer: int, factor: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`."""
    module = entry.hf_key(layer).removesuffix(".weight")
    return f"{PEFT_PREFIX}{module}.{factor}.weight"


def _host(x: Any) -> np.ndarray:
    """A whole array on this host: gathered across processes when it is not fully addressable (a collective:
    every process must call it)."""
    from latentjax.parallel.distributed import to_host

    return np.asarray(to_host(x))


def peft_config_dict(lora_cfg: LoraConfig, targets: tuple, base_model_name_or_path: Optional[str] = None,
                     inference_mode: bool = True) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora_cfg.rank,
        "lora_alpha": lora_cfg.alpha,
        "lora_dropout": lora_cfg.dropout,
        "use_rslora": lora_cfg.use_rslora,
        "target_modules": list(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
        "base_model_name_or_path": base_model_name_or_path,
        "inference_mode": inference_mode,
    }


def export_peft(path: str, lora_params: Any, lora_cfg: LoraConfig, model_config: DecoderConfig,
                base_model_name_or_path: Optional[str] = None, dtype: Optional[str] = None,
                inference_mode: bool = True) -> Optional[str]:
    """Write `path/adapter_config.json` and `path/adapter_model.safetensors` in PEFT's layout.

    Sharded arrays are gathered (every process must call this); only process 0 writes. `dtype` casts the tensors
    (default: keep the adapter's dtype). Returns `path` on process 0, None elsewhere."""
    from safetensors.numpy import save_file

    lora_params = rules_lib.unbox(lora_params)
    targets = lora_targets(lora_params)
    table = _kernel_entries(model_config)
    tensors = {}
    for proj in targets:
        entry = table[proj]
        factors = lora_params["layers"][LAYER_PROJECTIONS[proj]][proj]
        for factor in FACTORS:
            stacked = _host(factors[factor])  # [L, in, r] or [L, r, out]
            if dtype is not None:
                stacked = stacked.astype(np.dtype(dtype))
            for layer in range(stacked.shape[0]):
                t = stacked[layer].T if entry.transpose else stacked[layer]
                tensors[peft_key(entry, layer, factor)] = np.ascontiguousarray(t)
    if jax.process_index() != 0:
        return None
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump(peft_config_dict(lora_cfg, targets, base_model_name_or_path, inference_mode), f, indent=2)
    save_file(tensors, os.path.join(path, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return path


def read_peft_config(path: str) -> LoraConfig:
    """The LoraConfig of a PEFT adapter folder (refusing the PEFT features latentjax does not implement)."""
    file = os.path.join(path, ADAPTER_CONFIG)
    if not os.path.exists(file):
        raise FileNotFoundError(f"No {ADAPTER_CONFIG} in {path}: point import_peft at a PEFT adapter folder.")
    with open(file) as f:
        raw = json.load(f)
    if raw.get("peft_type", "LORA") != "LORA":
        raise PeftFormatError(f"{file}: peft_type {raw.get('peft_type')!r} is not LORA.")
    unsupported = {
        "use_dora": bool(raw.get("use_dora")), "fan_in_fan_out": bool(raw.get("fan_in_fan_out")),
        "bias": raw.get("bias", "none") != "none", "rank_pattern": bool(raw.get("rank_pattern")),
        "alpha_pattern": bool(raw.get("alpha_pattern")), "layers_to_transform": raw.get("layers_to_transform")
        is not None, "modules_to_save": bool(raw.get("modules_to_save")), "lora_bias": bool(raw.get("lora_bias")),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise PeftFormatError(f"{file} uses PEFT option(s) latentjax does not support: {', '.join(bad)} "
                              f"({', '.join(f'{k}={raw.get(k)!r}' for k in bad)}).")
    listed = raw.get("target_modules")
    if isinstance(listed, (list, tuple)):
        foreign = sorted(set(listed) - set(ALL_PROJECTIONS))
        if foreign:
            raise PeftFormatError(f"{file} adapts module(s) {foreign} that latentjax's LoRA does not cover "
                                  f"(it adapts {', '.join(ALL_PROJECTIONS)}).")
    # The tensors decide what is adapted (target_modules may be a regex or 'all-linear' in PEFT).
    targets = _targets_in_file(path) or (tuple(listed) if isinstance(listed, (list, tuple)) else "all")
    return LoraConfig(rank=int(raw["r"]), alpha=float(raw["lora_alpha"]), dropout=float(raw.get("lora_dropout", 0.0)),
                      targets=targets, use_rslora=bool(raw.get("use_rslora", False)))


def _targets_in_file(path: str) -> tuple:
    from safetensors import safe_open

    weights = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.exists(weights):
        return ()
    with safe_open(weights, "numpy") as f:
        keys = list(f.keys())
    return tuple(p for p in ALL_PROJECTIONS if any(k.endswith(f".{p}.lora_A.weight") for k in keys))


def import_peft(path: str, config: DecoderConfig, mesh: Optional[Mesh] = None, rules=rules_lib.DEFAULT_RULES,
                dtype: str = "float32") -> Any:
    """Read a PEFT LoRA adapter for a latentjax decoder with `config` into latentjax's LoRA tree
    (`{"layers": {block: {proj: {"lora_A": [L, in, r], "lora_B": [L, r, out]}}}}`), placed on `mesh`
    (replicated on one device when None). Every tensor must be used and every adapted layer present.
    `read_peft_config(path)` gives the matching LoraConfig."""
    from safetensors import safe_open

    lora_cfg = read_peft_config(path)
    weights = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"No {ADAPTER_WEIGHTS} in {path} (latentjax reads safetensors adapters only).")
    with safe_open(weights, "numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    table = _kernel_entries(config)
    out: dict = {"layers": {}}
    used = set()
    for proj in lora_cfg.targets:
        entry = table[proj]
        factors = {}
        for factor in FACTORS:
            per_layer = []
            for layer in range(config.num_layers):
                key = peft_key(entry, layer, factor)
                if key not in tensors:
                    raise PeftFormatError(
                        f"{weights} lacks {key!r}: the adapter was saved with other key names (expected the "
                        f"'{PEFT_PREFIX}' prefix), for fewer layers than this {config.num_layers}-layer model, "
                        "or for only some layers.")
                t = tensors[key]
                per_layer.append(t.T if entry.transpose else t)
                used.add(key)
            factors[factor] = np.stack(per_layer).astype(np.dtype(dtype))
        out["layers"].setdefault(LAYER_PROJECTIONS[proj], {})[proj] = factors
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise PeftFormatError(f"{weights} has {len(unexpected)} tensor(s) latentjax does not map (first: "
                              f"{unexpected[0]!r}); e.g. a deeper model's layers or adapted embeddings.")
    abstract = rules_lib.unbox(abstract_lora(config, lora_cfg))
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(abstract)):
        if got.shape != want.shape:
            raise PeftFormatError(f"{weights}: a LoRA tensor has shape {got.shape} (stacked, latentjax layout) but "
                                  f"the model config implies {want.shape}: adapter and base model do not match.")
    mesh = mesh or rules_lib.single_device_mesh()
    return jax.device_put(out, lora_shardings(config, lora_cfg, mesh, rules))

