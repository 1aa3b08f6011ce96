"""One Flax decoder for the Llama and Mistral families (rotate-half RoPE, GQA, RMSNorm, SwiGLU).

The module knows nothing of LoRA, bridges or training. Layers are stacked and scanned so compile time does not
grow with depth; parameters carry logical axis names that `latentjax.parallel.rules` maps onto a mesh. Module and
parameter names mirror the Hugging Face tree so the checkpoint map stays a short table.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from latentjax.models import rope as rope_lib
from latentjax.models.config import DecoderConfig

Array = jax.Array

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "minimal": jax.checkpoint_policies.save_only_these_names("qkv", "attn_out", "mlp_in", "mlp_out"),
    # What the backward pass cannot get cheaply: q/k/v and the attention context (o_proj's input). The MLP's gate
    # and up products are recomputed either way (silu(gate) * up needs both), so saving its output buys nothing.
    "lean": jax.checkpoint_policies.save_only_these_names("qkv", "attn_ctx"),
}


@flax.struct.dataclass
class KVCache:
    """Key/value cache plus the position and validity of every slot. Scanned layers share one stacked array
    [layers, batch, slots, kv_heads, head_dim]; unscanned layers (`scan_layers=False`) own one array each
    ([batch, slots, kv_heads, head_dim] in a tuple), so a decode step reads its layer's keys in place instead of
    slicing them out of the stacked array."""

    k: Any  # Array, or a tuple of per-layer Arrays
    v: Any
    positions: Array  # [batch, slots] int32
    valid: Array  # [batch, slots] bool
    index: Array  # scalar int32: next slot to write

    @classmethod
    def zeros(cls, config: DecoderConfig, batch: int, slots: int, dtype: Any) -> "KVCache":
        shape = (batch, slots, config.num_kv_heads, config.head_dim)
        if config.scan_layers:
            k, v = jnp.zeros((config.num_layers,) + shape, dtype), jnp.zeros((config.num_layers,) + shape, dtype)
        else:
            k = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
            v = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        return cls(k=k, v=v,
                   positions=jnp.zeros((batch, slots), jnp.int32), valid=jnp.zeros((batch, slots), bool),
                   index=jnp.zeros((), jnp.int32))


@flax.struct.dataclass
class AttentionMask:
    """Which keys each query may attend to, [batch, 1, q, kv] bool, and whether every allowed key of a real query
    lies at or before the query's index (`index_causal`: positions the decoder numbered itself, no cache). Then a
    fused kernel may add index-causal masking and skip the blocks above the diagonal; only padding query rows (whose
    outputs nothing reads) can change, and they stay finite (each row keeps its own diagonal key)."""

    allowed: Array
    index_causal: bool = flax.struct.field(pytree_node=False, default=False)


@flax.struct.dataclass
class DecoderOutput:
    logits: Optional[Array]  # [batch, seq, vocab] float32 ([batch, 1, vocab] with a cache), None if not asked
    hidden: Array  # [batch, seq, embed]: final hidden state (normed iff apply_final_norm)
    cache: Optional[KVCache]
    all_hidden: Optional[Array]  # [layers, batch, seq, embed] outputs of each layer, when asked for


def _dense(features: int, names: tuple, use_bias: bool, cfg: DecoderConfig, name: str) -> nn.Dense:
    return nn.Dense(
        features, use_bias=use_bias, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:]), name=name)


class RMSNorm(nn.Module):
    eps: float
    param_dtype: Any = jnp.float32
    use_scale: bool = True  # False: the scale lives in the next projection's weights (`folded_norms`)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        if not self.use_scale:
            return xf.astype(x.dtype)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (x.shape[-1],), self.param_dtype)
        return scale.astype(x.dtype) * xf.astype(x.dtype)


def make_attention_mask(q_pos: Array, kv_pos: Array, kv_valid: Array, window: Optional[int]) -> Array:
    """[batch, 1, q, kv] boolean mask: causal by position, padding removed, optional sliding window of W keys."""
    allowed = kv_valid[:, None, :] & (kv_pos[:, None, :] <= q_pos[:, :, None])
    if window is not None:
        allowed &= (q_pos[:, :, None] - kv_pos[:, None, :]) < window
    return allowed[:, None]


# "auto" sends a single-GPU bf16/fp16 decode step's attention to the Pallas kernel (`decode_attention`) when batch x kv
# heads is below this. On an H100 the kernel beat XLA's attention at batch 1 (0.8-0.9%, sessions 9-10; 2% on an
# H200, session 8) and batch 8 (1.2%, session 10) of an 8-kv-head model, and at batch 64 (512 programs, no split)
# once generation compiled without split-K GEMMs: the b64 sample took 498.2 vs 509.9 ms (session 14; within 1%
# either way before that). 1024 takes batches up to 127 of an 8-kv-head model; 0 turns the kernel off for "auto".
AUTO_DECODE_KERNEL_BELOW = 1024

# "auto" sends attention over fewer query positions than this to XLA's implementation rather than cuDNN's. Each cuDNN
# call also zeroes its output and workspace (all 445 memsets of the b8 bridge step, session 13's H100 profile), but
# XLA's attention for the receiver's 48-token rows made that step slower (48.0 vs 46.4-47.1 ms, session 14), so 0:
# cuDNN at every length it supports. `benchmarks/step_options.py` variants xla64 and xlaall set it.
AUTO_CUDNN_MIN_QUERIES = 0


def attention_implementation(choice: str, q: Array, k: Array, decoding: bool = False) -> str:
    """The attention implementation for `choice` (xla | cudnn | pallas | auto): `jax.nn.dot_product_attention`'s
    "xla" or "cudnn", or "pallas" for `decode_attention`'s kernel. "auto" picks cuDNN's fused kernel where it applies
    (a GPU, several query positions and at least AUTO_CUDNN_MIN_QUERIES of them, even lengths, head_dim <= 256 and
    a multiple of 8, bf16/fp16), the Pallas kernel for a decode step on one GPU below a batch x kv heads of
    AUTO_DECODE_KERNEL_BELOW, and XLA's elsewhere; jax's own default (implementation=None) is always XLA's.
    "pallas" sends every decode step (one query over a cache) to the kernel, interpreted off a GPU, and the other
    steps where "auto" would; it is meant for one device (a custom kernel is not partitioned over a mesh)."""
    if choice not in ("auto", "xla", "cudnn", "pallas"):
        raise ValueError(f"attention_impl must be one of xla, cudnn, pallas, auto; got {choice!r}.")
    t, s, h = q.shape[1], k.shape[1], q.shape[-1]
    gpu, half = jax.default_backend() == "gpu", q.dtype in (jnp.bfloat16, jnp.float16) and k.dtype == q.dtype
    small = q.shape[0] * k.shape[2] < AUTO_DECODE_KERNEL_BELOW
    if decoding and t == 1 and (choice == "pallas" or (
            choice == "auto" and small and gpu and half and jax.device_count() == 1)):
        return "pallas"
    if choice in ("xla", "cudnn"):
        return choice
    fused = (gpu and t > 1 and t >= AUTO_CUDNN_MIN_QUERIES and t % 2 == 0 and s % 2 == 0 and h <= 256 and h % 8 == 0
             and half)
    return "cudnn" if fused else "xla"


class Attention(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache_kv, cache_index, layer_id):
        cfg = self.config
        b, t, _ = x.shape
        if cfg.fused_projections:
            # columns ordered [kv head, its `group` queries then its key then its value, head_dim]: sharding the
            # kv-head axis keeps each group's q/k/v on one device
            group = cfg.num_heads // cfg.num_kv_heads
            qkv = _dense(cfg.num_kv_heads * (group + 2) * cfg.head_dim, ("embed", "kv_heads"), cfg.attention_bias,
                         cfg, "qkv_proj")(x).reshape(b, t, cfg.num_kv_heads, group + 2, cfg.head_dim)
            q = qkv[:, :, :, :group].reshape(b, t, cfg.num_heads, cfg.head_dim)  # head h uses kv head h // group
            k, v = qkv[:, :, :, group], qkv[:, :, :, group + 1]
            q, k, v = (checkpoint_name(a, "qkv") for a in (q, k, v))
        else:
            q = _dense(cfg.num_heads * cfg.head_dim, ("embed", "heads"), cfg.attention_bias, cfg, "q_proj")(x)
            k = _dense(cfg.num_kv_heads * cfg.head_dim, ("embed", "kv_heads"), cfg.attention_bias, cfg, "k_proj")(x)
            v = _dense(cfg.num_kv_heads * cfg.head_dim, ("embed", "kv_heads"), cfg.attention_bias, cfg, "v_proj")(x)
            q, k, v = (checkpoint_name(a, "qkv") for a in (q, k, v))
            q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
            k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
            v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        q = rope_lib.apply_rope(q, cos, sin)
        k = rope_lib.apply_rope(k, cos, sin)
        q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "head_dim"))
        new_cache = None
        if cache_kv is not None:
            # The cache of all layers rides in the scan's carry and is updated in place at [layer, :, index]:
            # as a scanned input/output it would be copied whole on every decode step.
            ck, cv = cache_kv
            if ck.ndim == 5:  # stacked over layers
                start = (layer_id, 0, cache_index, 0, 0)
                ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), start)
                cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), start)
                new_cache = (ck, cv)
                k = jax.lax.dynamic_index_in_dim(ck, layer_id, 0, keepdims=False).astype(q.dtype)
                v = jax.lax.dynamic_index_in_dim(cv, layer_id, 0, keepdims=False).astype(q.dtype)
            else:  # this layer's own cache
                start = (0, cache_index, 0, 0)
                ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), start)
                cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), start)
                new_cache = (ck, cv)
                k, v = ck.astype(q.dtype), cv.astype(q.dtype)
        impl = attention_implementation(cfg.attention_impl, q, k, decoding=cache_kv is not None)
        if impl == "pallas":  # the slots from cache_index + t on are empty in every row: the kernel skips them
            # imported here: Pallas' Triton module is needed only by this path (not on TPUs, say)
            from latentjax.models.decode_attention import decode_attention

            out = decode_attention(q, k, v, mask.allowed[:, 0, 0, :], cache_index + t,
                                   interpret=jax.default_backend() != "gpu")
        else:
            # cuDNN skips the blocks above the diagonal only when told the mask is causal; XLA's path is left as is
            causal = impl == "cudnn" and mask.index_causal
            out = jax.nn.dot_product_attention(q, k, v, mask=mask.allowed, is_causal=causal, implementation=impl)
        out = checkpoint_name(out.reshape(b, t, cfg.num_heads * cfg.head_dim), "attn_ctx")
        out = _dense(cfg.hidden_size, ("heads", "embed"), cfg.attention_bias, cfg, "o_proj")(out)
        return checkpoint_name(out, "attn_out"), new_cache


class MLP(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if cfg.fused_projections:  # columns [mlp, (gate, up)]: sharding the mlp axis keeps each pair together
            gate_up = _dense(2 * cfg.intermediate_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "gate_up_proj")(x)
            gate_up = gate_up.reshape(gate_up.shape[:-1] + (cfg.intermediate_size, 2))
            gate, up = gate_up[..., 0], gate_up[..., 1]
        else:
            gate = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "gate_proj")(x)
            up = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "up_proj")(x)
        h = checkpoint_name(nn.silu(gate) * up, "mlp_in")
        h = nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))
        out = _dense(cfg.hidden_size, ("mlp", "embed"), cfg.mlp_bias, cfg, "down_proj")(h)
        return checkpoint_name(out, "mlp_out")


class DecoderLayer(nn.Module):
    config: DecoderConfig
    collect_hidden: bool = False

    @nn.compact
    def __call__(self, carry, cos, sin, mask, cache_index, layer_id):
        x, cache_kv = carry
        cfg = self.config
        pdt, scaled = jnp.dtype(cfg.param_dtype), not cfg.folded_norms
        h, new_cache = Attention(cfg, name="self_attn")(
            RMSNorm(cfg.rms_norm_eps, pdt, scaled, name="input_layernorm")(x), cos, sin, mask, cache_kv, cache_index,
            layer_id)
        x = x + h
        x = x + MLP(cfg, name="mlp")(RMSNorm(cfg.rms_norm_eps, pdt, scaled, name="post_attention_layernorm")(x))
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        return (x, new_cache), (x if self.collect_hidden else None)


class Decoder(nn.Module):
    """Llama/Mistral decoder. Feed `input_ids` or `inputs_embeds`; padding and positions are explicit."""

    config: DecoderConfig
    collect_hidden: bool = False  # also return every layer's output (HF's hidden_states[1:])

    def setup(self):
        cfg = self.config
        self.embed_tokens = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
        layer = DecoderLayer
        if cfg.remat_policy != "none":
            # A scan already keeps XLA from merging the recomputation with the forward; straight-line layers need
            # the barrier, or CSE undoes the remat (the per-layer step would hold every activation).
            layer = nn.remat(layer, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
        if not cfg.scan_layers:
            self.layers = [layer(cfg, self.collect_hidden) for _ in range(cfg.num_layers)]  # layers_0, layers_1, ...
        else:
            self.layers = nn.scan(
                layer, variable_axes={True: 0}, split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=cfg.num_layers, unroll=cfg.scan_unroll,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.collect_hidden)
        self.norm = RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.param_dtype))
        if not cfg.tie_word_embeddings:
            self.lm_head = _dense(cfg.vocab_size, ("embed", "vocab"), False, cfg, "lm_head")

    def embed(self, input_ids: Array) -> Array:
        return self.embed_tokens(input_ids)

    def __call__(
        self,
        input_ids: Optional[Array] = None,
        attention_mask: Optional[Array] = None,
        positions: Optional[Array] = None,
        inputs_embeds: Optional[Array] = None,
        cache: Optional[KVCache] = None,
        return_logits: bool = True,
        apply_final_norm: bool = True,
    ) -> DecoderOutput:
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(jnp.dtype(cfg.dtype))
        b, t = x.shape[:2]
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool)
        attention_mask = attention_mask.astype(bool)
        numbered_here = positions is None
        if positions is None:
            offset = 0 if cache is None else _next_positions(cache)
            positions = offset + jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
        positions = positions.astype(jnp.int32)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        cos, sin = rope_lib.cos_sin(positions, rope_lib.inverse_frequencies(cfg.rope, cfg.head_dim))

        if cache is None:
            mask = AttentionMask(make_attention_mask(positions, positions, attention_mask, cfg.sliding_window),
                                 index_causal=numbered_here)
            cache_kv, cache_index = None, jnp.zeros((), jnp.int32)
        else:
            idx = cache.index
            cache = cache.replace(
                positions=jax.lax.dynamic_update_slice_in_dim(cache.positions, positions, idx, axis=1),
                valid=jax.lax.dynamic_update_slice_in_dim(cache.valid, attention_mask, idx, axis=1))
            mask = AttentionMask(make_attention_mask(positions, cache.positions, cache.valid, cfg.sliding_window))
            cache_kv, cache_index = (cache.k, cache.v), idx

        if cfg.scan_layers:
            layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
            (x, new_kv), all_hidden = self.layers((x, cache_kv), cos, sin, mask, cache_index, layer_ids)
        else:
            outs, new_k, new_v = [], [], []
            for i, layer in enumerate(self.layers):
                layer_kv = None if cache_kv is None else (cache_kv[0][i], cache_kv[1][i])
                (x, layer_kv), h = layer((x, layer_kv), cos, sin, mask, cache_index, i)
                outs.append(h)
                if layer_kv is not None:
                    new_k.append(layer_kv[0])
                    new_v.append(layer_kv[1])
            new_kv = (tuple(new_k), tuple(new_v))
            all_hidden = jnp.stack(outs) if self.collect_hidden else None
        if cache is not None:
            cache = cache.replace(k=new_kv[0], v=new_kv[1], index=cache.index + t)
        if apply_final_norm:
            x = self.norm(x)
        logits = None
        if return_logits:
            # With a cache (generation) only the last position's logits are used: a batch-512 prefill's float32
            # logits for every position would take ~19 GB on SmolLM2's 49k vocabulary.
            last = x if cache is None else x[:, -1:]
            if cfg.tie_word_embeddings:
                logits = self.embed_tokens.attend(last)
            else:
                logits = self.lm_head(last)
            logits = nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "act_vocab"))
        return DecoderOutput(logits=logits, hidden=x, cache=cache,
                             all_hidden=all_hidden)


def _next_positions(cache: KVCache) -> Array:
    """Per row, one past the largest position already in the cache ([batch, 1])."""
    seen = jnp.where(cache.valid, cache.positions, -1)
    return (jnp.max(seen, axis=1) + 1)[:, None]
