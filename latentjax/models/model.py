"""`LanguageModel`: a frozen decoder's config, params and jitted entry points; `from_pretrained` builds one."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from latentjax.models.config import DecoderConfig, load_hf_config
from latentjax.models.decoder import Decoder, DecoderOutput
from latentjax.models.loading import load_params
from latentjax.parallel import rules as rules_lib


def abstract_params(config: DecoderConfig) -> Any:
    """Boxed (logically annotated) parameter shapes, without allocating anything."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda: Decoder(config).init(jax.random.PRNGKey(0), ids))["params"]


def param_shardings(config: DecoderConfig, mesh: Mesh, rules=rules_lib.DEFAULT_RULES) -> Any:
    return rules_lib.shardings_of(abstract_params(config), mesh, rules)


def init_params(config: DecoderConfig, rng: jax.Array, mesh: Optional[Mesh] = None,
                rules=rules_lib.DEFAULT_RULES) -> Any:
    """Random parameters (for tests and benchmarks), created directly in their sharding. A per-layer config gets the
    stacked initialisation split into layers (`unstack_layers` of the scanned config's, for the same key): one
    random op per kind of weight rather than per layer and weight, which XLA compiles in seconds, not minutes, for
    an 8B model's 32 layers (at the cost of holding the stacked copy too while the split runs)."""
    mesh = mesh or rules_lib.single_device_mesh()
    shardings = param_shardings(config, mesh, rules)
    ids = jnp.zeros((1, 1), jnp.int32)

    def init(r):
        params = rules_lib.unbox(Decoder(config.replace(scan_layers=True)).init(r, ids)["params"])
        return params if config.scan_layers else split_layers(params, config.num_layers)

    return jax.jit(init, out_shardings=shardings)(rng)


def split_layers(params: Any, num_layers: int) -> Any:
    """Stacked parameters -> {..., "layers_0": ..., "layers_{N-1}": ...} (traceable)."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["layers"])
    return out


def truncate_layers(config: DecoderConfig, params: Any, num_layers: int) -> tuple[DecoderConfig, Any]:
    """The first `num_layers` layers only (a bridge sender never runs the layers above its tap)."""
    params = dict(params)
    if config.scan_layers:
        params["layers"] = jax.tree.map(lambda x: x[:num_layers], params["layers"])
    else:
        for i in range(num_layers, config.num_layers):
            params.pop(f"layers_{i}")
    return config.replace(num_layers=num_layers), params


def unstack_layers(config: DecoderConfig, params: Any, mesh: Optional[Mesh] = None,
                   rules=rules_lib.DEFAULT_RULES) -> tuple[DecoderConfig, Any]:
    """Stacked (scanned) parameters -> one subtree per layer, for fast decoding (`scan_layers=False`).

    In a scanned decode step every layer's weights are sliced out of the stacked arrays, which XLA materialises as
    copies: about three times the weight traffic of the memory floor. Per-layer arrays are read in place. The
    result is a new set of buffers (the stacked ones can be dropped afterwards); shardings follow the same rules."""
    if not config.scan_layers:
        return config, params
    flat = config.replace(scan_layers=False)
    mesh = mesh or rules_lib.single_device_mesh()
    shardings = param_shardings(flat, mesh, rules)
    return flat, jax.jit(lambda p: split_layers(p, config.num_layers), out_shardings=shardings)(params)


def _map_layers(fn: Callable, params: Any) -> Any:
    """`fn` applied to each layer's subtree (the stacked `layers` or every `layers_<i>`); the rest kept."""
    return {k: (fn(v) if k == "layers" or k.startswith("layers_") else v) for k, v in params.items()}


def fuse_qkv_columns(config: DecoderConfig, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The fused q/k/v projection's output columns from the separate ones (last axis of kernels, biases or
    activations): [.., kv head, its `group` query heads then its key then its value, head_dim] (the decoder's
    `qkv_proj` layout, which keeps each kv group on one device when the kv-head axis is sharded)."""
    kv, hd = config.num_kv_heads, config.head_dim
    heads = lambda a: a.reshape(a.shape[:-1] + (kv, -1, hd))  # noqa: E731  q columns are head-major
    return jnp.concatenate([heads(q), heads(k), heads(v)], axis=-2).reshape(q.shape[:-1] + (-1,))


def fuse_gate_up_columns(gate: jax.Array, up: jax.Array) -> jax.Array:
    """The fused gate/up projection's output columns: [.., mlp unit, (gate, up)] (the decoder's `gate_up_proj`)."""
    return jnp.stack([gate, up], axis=-1).reshape(gate.shape[:-1] + (-1,))


def fuse_projections(config: DecoderConfig, params: Any, mesh: Optional[Mesh] = None,
                     rules=rules_lib.DEFAULT_RULES) -> tuple[DecoderConfig, Any]:
    """Separate q/k/v and gate/up projections -> one `qkv_proj` and one `gate_up_proj` per layer
    (`fused_projections=True`; stacked or per-layer alike). The same function of the input: each output column is the
    same weight column, only regrouped. A new set of buffers, sharded by the same rules."""
    if config.fused_projections:
        return config, params
    fused = config.replace(fused_projections=True)

    def layer(p):
        attn, mlp = dict(p["self_attn"]), dict(p["mlp"])
        q, k, v = (attn.pop(n) for n in ("q_proj", "k_proj", "v_proj"))
        gate, up = mlp.pop("gate_proj"), mlp.pop("up_proj")
        attn["qkv_proj"] = {f: fuse_qkv_columns(config, q[f], k[f], v[f]) for f in q}
        mlp["gate_up_proj"] = {f: fuse_gate_up_columns(gate[f], up[f]) for f in gate}
        return dict(p, self_attn=attn, mlp=mlp)

    mesh = mesh or rules_lib.single_device_mesh()
    return fused, jax.jit(lambda p: _map_layers(layer, p), out_shardings=param_shardings(fused, mesh, rules))(params)


def fold_norm_scales(config: DecoderConfig, params: Any, mesh: Optional[Mesh] = None,
                     rules=rules_lib.DEFAULT_RULES) -> tuple[DecoderConfig, Any]:
    """Each layer's RMSNorm scales multiplied into the input rows of the projections they feed (`folded_norms=True`;
    stacked or per-layer, fused or separate projections): input_layernorm's into q/k/v, post_attention_layernorm's
    into gate/up. (x_hat * g) @ W = x_hat @ (g[:, None] * W), so the function is the same; in bfloat16 the product
    is rounded once in the weight instead of in the activation. The final norm keeps its scale (the LM head may be
    tied to the embeddings). For frozen models: a LoRA factor on these projections would read the unscaled input.
    A new set of buffers, sharded by the same rules."""
    if config.folded_norms:
        return config, params
    folded = config.replace(folded_norms=True)
    attn_names = ("qkv_proj",) if config.fused_projections else ("q_proj", "k_proj", "v_proj")
    mlp_names = ("gate_up_proj",) if config.fused_projections else ("gate_proj", "up_proj")

    def scaled(dense, g):  # kernel [..., in, out]; g [..., in] (a leading layer axis when stacked)
        kernel = dense["kernel"]
        return dict(dense, kernel=(kernel.astype(jnp.float32) * g.astype(jnp.float32)[..., None]).astype(kernel.dtype))

    def layer(p):
        p = dict(p)
        g_attn, g_mlp = p.pop("input_layernorm")["scale"], p.pop("post_attention_layernorm")["scale"]
        attn = {k: (scaled(v, g_attn) if k in attn_names else v) for k, v in p["self_attn"].items()}
        mlp = {k: (scaled(v, g_mlp) if k in mlp_names else v) for k, v in p["mlp"].items()}
        return dict(p, self_attn=attn, mlp=mlp)

    mesh = mesh or rules_lib.single_device_mesh()
    return folded, jax.jit(lambda p: _map_layers(layer, p), out_shardings=param_shardings(folded, mesh, rules))(params)


@dataclasses.dataclass
class LanguageModel:
    """A decoder with its parameters. Calling it returns float32 logits [batch, seq, vocab]."""

    config: DecoderConfig
    params: Any
    mesh: Mesh
    rules: tuple = rules_lib.DEFAULT_RULES
    path: Optional[str] = None
    _tokenizer: Any = None

    @property
    def module(self) -> Decoder:
        return Decoder(self.config)

    def apply(self, params: Any, *args, **kwargs) -> DecoderOutput:
        """Pure forward (use inside your own jitted functions)."""
        return Decoder(self.config).apply({"params": params}, *args, **kwargs)

    def embed(self, params: Any, input_ids: jax.Array) -> jax.Array:
        return Decoder(self.config).apply({"params": params}, input_ids, method=Decoder.embed)

    def __call__(self, input_ids, attention_mask=None, positions=None, inputs_embeds=None) -> jax.Array:
        with jax.set_mesh(self.mesh):
            return _forward_logits(self.config, self.rules, self.params, input_ids, attention_mask, positions,
                                   inputs_embeds)

    def hidden_states(self, layer: int, input_ids, attention_mask=None, positions=None) -> jax.Array:
        """HF's `hidden_states[layer]`: 0 = embeddings, L = after L blocks (before the final norm, except the
        last, which HF returns normed). Negative indices count from the end; only the layers needed are run."""
        n = self.config.num_layers
        layer = layer + n + 1 if layer < 0 else layer
        if not 0 <= layer <= n:
            raise ValueError(f"layer must be in [-{n + 1}, {n}] for a {n}-layer model, got {layer}.")
        with jax.set_mesh(self.mesh):
            return _hidden_at(self.config, self.rules, layer, self.params, input_ids, attention_mask, positions)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.path is None:
                raise ValueError("This model was not loaded from a folder, so it has no tokenizer.")
            self._tokenizer = load_tokenizer(self.path, self.config)
        return self._tokenizer


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward_logits(config, rules, params, input_ids, attention_mask, positions, inputs_embeds):
    with rules_lib.axis_rules(rules):
        out = Decoder(config).apply({"params": params}, input_ids, attention_mask, positions, inputs_embeds)
    return out.logits


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _hidden_at(config, rules, layer, params, input_ids, attention_mask, positions):
    with rules_lib.axis_rules(rules):
        if layer == 0:
            return Decoder(config).apply({"params": params}, input_ids, method=Decoder.embed)
        final = layer == config.num_layers
        cfg, p = (config, params) if final else truncate_layers(config, params, layer)
        out = Decoder(cfg).apply({"params": p}, input_ids, attention_mask, positions, return_logits=False,
                                 apply_final_norm=final)
    return out.hidden


def load_tokenizer(path: str, config: DecoderConfig):
    """The folder's tokenizer (and chat template), checked against the embedding matrix."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # transformers raises many types here
        raise FileNotFoundError(f"No usable tokenizer in {path} ({type(e).__name__}: {e}).") from e
    if len(tok) > config.vocab_size:
        raise ValueError(
            f"The tokenizer in {path} has {len(tok)} tokens but the model's embedding matrix has "
            f"{config.vocab_size} rows; use the tokenizer that was trained with this model.")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def from_pretrained(path: str, dtype: str = "float32", mesh: Optional[Mesh] = None,
                    rules=rules_lib.DEFAULT_RULES, param_dtype: Optional[str] = None,
                    **config_overrides: Any) -> LanguageModel:
    """Load an HF Llama/Mistral folder. `dtype` is the compute dtype; parameters are stored in `param_dtype`
    (default: same as `dtype`). Extra keyword arguments override DecoderConfig fields (e.g. remat_policy; use
    scan_layers=False for generation-heavy work: per-layer weights, faster decoding, briefly twice the memory; and
    fused_projections=True and folded_norms=True for frozen models: one q/k/v and one gate/up matmul per layer,
    norms without their scale multiply)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Model folder {path!r} does not exist.")
    config = load_hf_config(path, dtype=dtype, param_dtype=param_dtype or dtype, **config_overrides)
    mesh = mesh or rules_lib.single_device_mesh()
    from latentjax.parallel.mesh import check_model_fits_mesh

    check_model_fits_mesh(config, mesh, rules)
    # Checkpoints load stacked and separate; scan_layers=False splits the layers, fused_projections=True joins the
    # projections and folded_norms=True moves the norm scales into them afterwards.
    stacked = config.replace(scan_layers=True, fused_projections=False, folded_norms=False)
    boxed = abstract_params(stacked)
    params = load_params(path, stacked, rules_lib.unbox(boxed), rules_lib.shardings_of(boxed, mesh, rules))
    loaded = stacked
    if not config.scan_layers:
        loaded, params = unstack_layers(loaded, params, mesh, rules)
    if config.fused_projections:
        loaded, params = fuse_projections(loaded, params, mesh, rules)
    if config.folded_norms:
        loaded, params = fold_norm_scales(loaded, params, mesh, rules)
    config = loaded
    return LanguageModel(config=config, params=params, mesh=mesh, rules=rules, path=path)
