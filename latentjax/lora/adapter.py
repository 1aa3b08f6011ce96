"""LoRA applied to the decoder from outside, Gemma-style: the decoder file has no LoRA code.

LoRA parameters mirror the base tree, `{"layers": {"self_attn": {"q_proj": {"lora_A": [L, in, r],
"lora_B": [L, r, out]}}}}`, and are passed to `Decoder.apply` as a variable collection named "lora". The decoder
scans its layers over every collection (`variable_axes={True: 0}`), so inside the scan body each `nn.Dense` sees
its own layer's slice of the collection in its own scope; a per-layer decoder (`scan_layers=False`) gets the
collection split into `layers_0`, `layers_1`, ... (the adapter itself stays stacked: one format for checkpoints
and PEFT export). A method interceptor (`nn.intercept_methods`) catches
every `nn.Dense.__call__`; when that Dense has `lora_A`/`lora_B` in the "lora" collection it returns
`base(x) + scale * (dropout(x) @ A) @ B`. Which projections are adapted is decided only by which leaves exist.

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
from latentjax.parallel import rules as rules_lib

LORA_COLLECTION = "lora"
DROPOUT_COLLECTION = "lora_dropout"


def _require_separate_projections(config: DecoderConfig) -> None:
    if config.fused_projections:
        raise ValueError("LoRA adapts the separate q/k/v/gate/up projections, but this base model was loaded with "
                         "fused_projections=True; load it with fused_projections=False (the default).")


def _base_kernels(config: DecoderConfig) -> dict:
    """Abstract, logically annotated kernel of every layer projection: proj -> nn.LogicallyPartitioned([L, in, out])."""
    from latentjax.models.model import abstract_params

    _require_separate_projections(config)
    layers = abstract_params(config.replace(scan_layers=True))["layers"]  # adapters stay stacked either way
    return {proj: layers[block][proj]["kernel"] for proj, block in LAYER_PROJECTIONS.items()}


def init_lora(model_config: DecoderConfig, lora_cfg: LoraConfig, rng: jax.Array) -> Any:
    """Fresh adapter as PEFT makes it (init_lora_weights=True): A ~ kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(in), 1/sqrt(in)), and B = 0, so the adapter starts as the identity. Float32, boxed in
    `nn.LogicallyPartitioned` with names A: ("layers", <base in axis>, "lora_rank"), B: ("layers", "lora_rank",
    <base out axis>); `rules_lib.unbox` gives plain arrays."""
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


def _interceptor(lora_cfg: LoraConfig, deterministic: bool):
    scale = lora_cfg.scale
    rate = lora_cfg.dropout

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or not isinstance(module, nn.Dense)
                or not module.has_variable(LORA_COLLECTION, "lora_A")):
            return next_fun(*args, **kwargs)
        x = args[0] if args else kwargs["inputs"]
        y = next_fun(*args, **kwargs)
        a = module.get_variable(LORA_COLLECTION, "lora_A")
        b = module.get_variable(LORA_COLLECTION, "lora_B")
        dtype = module.dtype or x.dtype
        if not deterministic and rate > 0.0:
            if not module.has_variable(DROPOUT_COLLECTION, "key"):
                raise ValueError("LoRA dropout is on (deterministic=False) but no rng was given to lora_apply.")
            key = jax.random.wrap_key_data(module.get_variable(DROPOUT_COLLECTION, "key"))
            keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
            x = jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
        h = jnp.dot(x.astype(dtype), a.astype(dtype))
        delta = jnp.dot(h, b.astype(dtype)) * jnp.asarray(scale, dtype)
        return y + delta.astype(y.dtype)

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


def lora_apply(model_config: DecoderConfig, base_params: Any, lora_params: Any, lora_cfg: LoraConfig, *args,
               rng: Optional[jax.Array] = None, deterministic: bool = True, **kwargs) -> DecoderOutput:
    """`Decoder(model_config).apply` with the adapter applied; `*args, **kwargs` are the decoder's (input_ids,
    attention_mask, positions, inputs_embeds, cache, ...). Dropout runs when `deterministic=False` (needs `rng`).
    Pure and jittable; call inside `rules_lib.axis_rules(...)` as for the plain decoder."""
    _require_separate_projections(model_config)
    lora_params = rules_lib.unbox(lora_params)
    layout = (lambda t: t) if model_config.scan_layers else per_layer  # noqa: E731
    variables = {"params": base_params, LORA_COLLECTION: layout(lora_params)}
    if not deterministic and lora_cfg.dropout > 0.0:
        if rng is None:
            raise ValueError("lora_apply(deterministic=False) with dropout > 0 needs rng=jax.random.key(...).")
        variables[DROPOUT_COLLECTION] = layout(_dropout_keys(lora_params, rng))
    with nn.intercept_methods(_interceptor(lora_cfg, deterministic)):
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


def merge(base_params: Any, lora_params: Any, lora_cfg: LoraConfig) -> Any:
    """Plain decoder params with the adapter folded in: W' = W + scale * A @ B per layer, in W's dtype.
    Jittable (shardings follow the base weights); the base tree is not modified."""
    lora_params = rules_lib.unbox(lora_params)
    # a stacked base takes the stacked factors at once; a per-layer base (`layers_<i>`) slice i of them
    factors = {"layers": lora_params["layers"]} if "layers" in base_params else per_layer(lora_params)
    out = dict(base_params)
    for name, layer_factors in factors.items():
        layer = out[name]
        for proj in lora_targets(lora_params):
            block = LAYER_PROJECTIONS[proj]
            f = layer_factors[block][proj]
            kernel = layer[block][proj]["kernel"]
            delta = jnp.einsum("...ir,...ro->...io", f["lora_A"].astype(jnp.float32), f["lora_B"].astype(jnp.float32))
            new_kernel = (kernel.astype(jnp.float32) + lora_cfg.scale * delta).astype(kernel.dtype)
            layer = {**layer, block: {**layer[block], proj: {**layer[block][proj], "kernel": new_kernel}}}
        out[name] = layer
    return out


def merged_model(model: Any, lora_params: Any, lora_cfg: LoraConfig) -> Any:
    """A `LanguageModel` like `model` whose params have the adapter merged in (placed like the base weights), so
    `model(...)`, `generate_text(model, ...)` and evaluation run at base-model speed. Holds a second copy of the
    weights; `model` is unchanged."""
    shardings = jax.tree.map(lambda x: x.sharding, model.params)
    with jax.set_mesh(model.mesh):
        params = jax.jit(merge, static_argnums=2, out_shardings=shardings)(model.params, lora_params, lora_cfg)
    return dataclasses.replace(model, params=params)
