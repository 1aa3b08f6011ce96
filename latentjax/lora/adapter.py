"""LoRA applied to the decoder from outside, Gemma-style: the decoder file has no LoRA code.

LoRA parameters mirror the base tree, `{"layers": {"self_attn": {"q_proj": {"lora_A": [L, in, r],
"lora_B": [L, r, out]}}}}`, and are passed to `Decoder.apply` as a variable collection named "lora". The decoder
scans its layers over every collection (`variable_axes={True: 0}`), so inside the scan body each `nn.Dense` sees
its own layer's slice of the collection in its own scope; a per-layer decoder (`scan_layers=False`) gets the
collection split into `layers_0`, `layers_1`, ... (the adapter itself stays stacked: one format for checkpoints
and PEFT export). A method interceptor (`nn.intercept_methods`) catches
every `nn.Dense.__call__`; when that Dense has `lora_A`/`lora_B` in the "lora" collection it returns
`base(x) + scale * (dropout(x) @ A) @ B`. Which projections are adapted is decided only by which leaves exist. On a
fused base (one `qkv_proj` and one `gate_up_proj` Dense per layer) the factors of q/k/v and gate/up are grouped under
the fused Dense, which adds each part's delta in its own output columns: the same function, with fewer and wider
base matmuls.

Dropout keys travel the same way (collection "lora_dropout", one key per layer and projection), because the
decoder's scan does not split (or even pass in) rng streams other than "params".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from latentjax.lora.config import LoraConfig
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder, DecoderOutput
from latentjax.models.hf_map import LAYER_PROJECTIONS
from latentjax.models.model import abstract_params, fuse_gate_up_columns, fuse_qkv_columns
from latentjax.parallel import rules as rules_lib

LORA_COLLECTION = "lora"
DROPOUT_COLLECTION = "lora_dropout"


# A fused base (`fused_projections=True`) has one Dense for q/k/v and one for gate/up; the adapter keeps PEFT's
# per-projection factors, grouped under the fused Dense for the forward (`_group_fused`).
FUSED_PARTS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _fused_widths(config: DecoderConfig) -> dict:
    """Output width of each projection a fused Dense computes (a part the adapter leaves out adds zeros)."""
    kv = config.num_kv_heads * config.head_dim
    return {"q_proj": config.num_heads * config.head_dim, "k_proj": kv, "v_proj": kv,
            "gate_proj": config.intermediate_size, "up_proj": config.intermediate_size}


def _fuse_parts(config: DecoderConfig, fused: str, parts: list) -> jax.Array:
    """The fused Dense's output columns from its parts' (last axis) in FUSED_PARTS order."""
    return fuse_qkv_columns(config, *parts) if fused == "qkv_proj" else fuse_gate_up_columns(*parts)


def _check_base(folded_norms: bool) -> None:
    if folded_norms:
        raise ValueError("This base has its RMSNorm scales folded into its projections (folded_norms=True), but a "
                         "LoRA factor reads the scaled input: load the base with folded_norms=False.")


def _base_kernels(config: DecoderConfig) -> dict:
    """Abstract, logically annotated kernel of every layer projection: proj -> nn.LogicallyPartitioned([L, in, out]).
    The separate projections whether or not the base is fused: the adapter has one pair of factors per projection."""
    # adapters stay stacked either way
    layers = abstract_params(config.replace(scan_layers=True, fused_projections=False))["layers"]
    return {proj: layers[block][proj]["kernel"] for proj, block in LAYER_PROJECTIONS.items()}


def init_lora(model_config: DecoderConfig, lora_cfg: LoraConfig, rng: jax.Array) -> Any:
    """Fresh adapter as PEFT makes it (init_lora_weights=True): A ~ kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(in), 1/sqrt(in)), and B = 0, so the adapter starts as the identity. Float32, boxed in
    `nn.LogicallyPartitioned` with names A: ("layers", <base in axis>, "lora_rank"), B: ("layers", "lora_rank",
    <base out axis>); `rules_lib.unbox` gives plain arrays."""
    _check_base(model_config.folded_norms)
    kernels = _base_kernels(model_config)
    out: dict = {"layers": {}}
    for i, proj in enumerate(lora_cfg.targets):
        kernel = kernels[proj]
        (layers_ax, in_ax, out_ax), (n, d_in, d_out) = kernel.names, kernel.value.shape
        bound = 1.0 / math.sqrt(d_in)
        a = jax.random.uniform(jax.random.fold_in(rng, i), (n, d_in, lora_cfg.rank), jnp.float32, -bound, bound)
        b = jnp.zeros((n, lora_cfg.rank, d_out), jnp.float32)
        out["layers"].setdefault(LAYER_PROJECTIONS[proj], {})[proj] = {
            "lora_A": nn.LogicallyPartitioned(a, names=(layers_ax, in_ax, "lora_rank")),
            "lora_B": nn.LogicallyPartitioned(b, names=(layers_ax, "lora_rank", out_ax)),
        }
    return out


def abstract_lora(model_config: DecoderConfig, lora_cfg: LoraConfig) -> Any:
    """Boxed shapes of the adapter (nothing allocated)."""
    return jax.eval_shape(lambda: init_lora(model_config, lora_cfg, jax.random.key(0)))


def lora_shardings(model_config: DecoderConfig, lora_cfg: LoraConfig, mesh: Mesh,
                   rules=rules_lib.DEFAULT_RULES) -> Any:
    """NamedShardings of the adapter: the rank axis replicated, the other axis sharded like the base weight."""
    return rules_lib.shardings_of(abstract_lora(model_config, lora_cfg), mesh, rules)


def lora_targets(lora_params: Any) -> tuple[str, ...]:
    """The projections an adapter tree adapts (HF order)."""
    present = {proj for block in lora_params["layers"].values() for proj in block}
    return tuple(p for p in LAYER_PROJECTIONS if p in present)


def _interceptor(model_config: DecoderConfig, lora_cfg: LoraConfig, deterministic: bool):
    scale = lora_cfg.scale
    rate = lora_cfg.dropout
    widths = _fused_widths(model_config)

    def delta(x, factors, dropout_key, dtype):
        """scale * (dropout(x) @ A) @ B for one projection's factors {"lora_A", "lora_B"}."""
        if not deterministic and rate > 0.0:
            if dropout_key is None:
                raise ValueError("LoRA dropout is on (deterministic=False) but no rng was given to lora_apply.")
            keep = jax.random.bernoulli(jax.random.wrap_key_data(dropout_key), 1.0 - rate, x.shape)
            x = jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
        h = jnp.dot(x.astype(dtype), factors["lora_A"].astype(dtype))
        return jnp.dot(h, factors["lora_B"].astype(dtype)) * jnp.asarray(scale, dtype)

    def variable(module, collection, name):
        return module.get_variable(collection, name) if module.has_variable(collection, name) else None

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.Dense):
            return next_fun(*args, **kwargs)
        parts = FUSED_PARTS.get(module.name, ()) if model_config.fused_projections else ()
        own = module.has_variable(LORA_COLLECTION, "lora_A")
        if not own and not any(module.has_variable(LORA_COLLECTION, p) for p in parts):
            return next_fun(*args, **kwargs)
        x = args[0] if args else kwargs["inputs"]
        y = next_fun(*args, **kwargs)
        dtype = module.dtype or x.dtype
        if own:
            factors = {n: module.get_variable(LORA_COLLECTION, n) for n in ("lora_A", "lora_B")}
            key = variable(module, DROPOUT_COLLECTION, "key")
            return y + delta(x, factors, key, dtype).astype(y.dtype)
        # a fused Dense: each adapted part's delta, zeros for the others, in the fused column layout
        deltas = []
        for part in parts:
            factors = variable(module, LORA_COLLECTION, part)
            if factors is None:
                deltas.append(jnp.zeros(x.shape[:-1] + (widths[part],), dtype))
            else:
                keys = variable(module, DROPOUT_COLLECTION, part)
                deltas.append(delta(x, factors, None if keys is None else keys["key"], dtype))
        return y + _fuse_parts(model_config, module.name, deltas).astype(y.dtype)

    return intercept


def _dropout_keys(lora_params: Any, rng: jax.Array) -> Any:
    """One raw PRNG key per (layer, projection), laid out like the adapter so the decoder's scan slices it."""
    out: dict = {"layers": {}}
    for i, proj in enumerate(lora_targets(lora_params)):
        block = LAYER_PROJECTIONS[proj]
        n = lora_params["layers"][block][proj]["lora_A"].shape[0]
        keys = jax.random.split(jax.random.fold_in(rng, i), n)
        out["layers"].setdefault(block, {})[proj] = {"key": jax.random.key_data(keys)}
    return out


def per_layer(tree: Any) -> Any:
    """`{"layers": stacked}` -> `{"layers_0": slice 0, ...}`: the tree of a per-layer (unscanned) decoder.

    Split, not indexed: the gradient of `lax.split` is one concatenate, where that of `a[i]` is a zero-padded
    full-size array per layer, summed (on the 8B LoRA step the optimizer fusion paid ~6 ms for those sums)."""
    leaves, treedef = jax.tree.flatten(tree["layers"])
    n = leaves[0].shape[0]
    slices = [[s[0] for s in jax.lax.split(a, [1] * n, axis=0)] for a in leaves]
    return {f"layers_{i}": jax.tree.unflatten(treedef, [per[i] for per in slices]) for i in range(n)}


def _group_fused(tree: Any) -> Any:
    """Per-projection entries of a layer tree moved under the fused Dense that computes them:
    `{"self_attn": {"q_proj": f, ...}}` -> `{"self_attn": {"qkv_proj": {"q_proj": f, ...}}}` (same for gate/up)."""
    layers = {}
    for block, projs in tree["layers"].items():
        grouped = dict(projs)
        for fused, parts in FUSED_PARTS.items():
            present = {p: grouped.pop(p) for p in parts if p in grouped}
            if present:
                grouped[fused] = present
        layers[block] = grouped
    return dict(tree, layers=layers)


def lora_apply(model_config: DecoderConfig, base_params: Any, lora_params: Any, lora_cfg: LoraConfig, *args,
               rng: Optional[jax.Array] = None, deterministic: bool = True, **kwargs) -> DecoderOutput:
    """`Decoder(model_config).apply` with the adapter applied; `*args, **kwargs` are the decoder's (input_ids,
    attention_mask, positions, inputs_embeds, cache, ...). Dropout runs when `deterministic=False` (needs `rng`).
    The base may be fused (`fused_projections=True`: one q/k/v and one gate/up matmul per layer); the adapter is
    the same. Pure and jittable; call inside `rules_lib.axis_rules(...)` as for the plain decoder."""
    _check_base(model_config.folded_norms)
    lora_params = rules_lib.unbox(lora_params)
    stacked_layout = _group_fused if model_config.fused_projections else (lambda t: t)  # noqa: E731
    layout = stacked_layout if model_config.scan_layers else (lambda t: per_layer(stacked_layout(t)))  # noqa: E731
    variables = {"params": base_params, LORA_COLLECTION: layout(lora_params)}
    if not deterministic and lora_cfg.dropout > 0.0:
        if rng is None:
            raise ValueError("lora_apply(deterministic=False) with dropout > 0 needs rng=jax.random.key(...).")
        variables[DROPOUT_COLLECTION] = layout(_dropout_keys(lora_params, rng))
    with nn.intercept_methods(_interceptor(model_config, lora_cfg, deterministic)):
        return Decoder(model_config).apply(variables, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class LoraForward:
    """The adapter forward in the signature `latentjax.inference.generate` takes as `apply_fn`; pass
    `params={"base": base_params, "lora": lora_params}`. Hashable (compiled once per config)."""

    model_config: DecoderConfig
    lora_cfg: LoraConfig

    def __call__(self, params, input_ids, attention_mask, positions, inputs_embeds, cache):
        return lora_apply(self.model_config, params["base"], params["lora"], self.lora_cfg, input_ids,
                          attention_mask, positions, inputs_embeds, cache)


def merge(base_params: Any, lora_params: Any, lora_cfg: LoraConfig,
          model_config: Optional[DecoderConfig] = None) -> Any:
    """Plain decoder params with the adapter folded in: W' = W + scale * A @ B per layer, in W's dtype.
    A fused base (`qkv_proj`, `gate_up_proj`) needs `model_config` for its column layout.
    Jittable (shardings follow the base weights); the base tree is not modified."""
    lora_params = rules_lib.unbox(lora_params)
    targets = lora_targets(lora_params)
    # a stacked base takes the stacked factors at once; a per-layer base (`layers_<i>`) slice i of them
    factors = {"layers": lora_params["layers"]} if "layers" in base_params else per_layer(lora_params)
    widths = _fused_widths(model_config) if model_config is not None else {}
    out = dict(base_params)
    for name, layer_factors in factors.items():
        layer = out[name]
        _check_base("input_layernorm" not in layer)  # a folded W holds diag(g) W: its update would need g
        deltas = {}  # (block, Dense name) -> the update of its kernel, float32
        for proj in targets:
            f = layer_factors[LAYER_PROJECTIONS[proj]][proj]
            deltas[LAYER_PROJECTIONS[proj], proj] = lora_cfg.scale * jnp.einsum(
                "...ir,...ro->...io", f["lora_A"].astype(jnp.float32), f["lora_B"].astype(jnp.float32))
        for fused, parts in FUSED_PARTS.items():
            block = LAYER_PROJECTIONS[parts[0]]
            if fused not in layer[block] or not any((block, p) in deltas for p in parts):
                continue
            if model_config is None:
                raise ValueError("This base has fused projections; pass model_config to merge for their layout.")
            rows = layer[block][fused]["kernel"].shape[:-1]
            columns = [deltas.pop((block, p), None) for p in parts]
            columns = [jnp.zeros(rows + (widths[p],), jnp.float32) if c is None else c for p, c in zip(parts, columns)]
            deltas[block, fused] = _fuse_parts(model_config, fused, columns)
        for (block, dense), delta in deltas.items():
            kernel = layer[block][dense]["kernel"]
            new_kernel = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
            layer = {**layer, block: {**layer[block], dense: {**layer[block][dense], "kernel": new_kernel}}}
        out[name] = layer
    return out


def merged_model(model: Any, lora_params: Any, lora_cfg: LoraConfig) -> Any:
    """A `LanguageModel` like `model` whose params have the adapter merged in (placed like the base weights), so
    `model(...)`, `generate_text(model, ...)` and evaluation run at base-model speed. Holds a second copy of the
    weights; `model` is unchanged."""
    shardings = jax.tree.map(lambda x: x.sharding, model.params)
    with jax.set_mesh(model.mesh):
        params = jax.jit(merge, static_argnums=(2, 3), out_shardings=shardings)(model.params, lora_params, lora_cfg,
                                                                                 model.config)
    return dataclasses.replace(model, params=params)
