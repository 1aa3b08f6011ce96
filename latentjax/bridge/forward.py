"""The bridged forward: sender (up to its tap) -> bridge -> receiver fed [primer] + [soft tokens] + [answer].

Everything here is a pure function of (bridge variables, frozen weights, batch). The bridge variables are
`{"params": ...}` plus, for a calibrated normalizer, `{"calibration": ...}` statistics (held constant); the frozen
weights are `{"sender": ..., "receiver": ...}` and are never differentiated.

Batch layout (host numpy, built by `latentjax.bridge.batching`):
  sender_input_ids, sender_attention_mask        [B, Ts]  left-padded sender prompt
  receiver_input_ids, receiver_attention_mask    [B, Tr]  primer, K placeholder slots, answer; right-padded
  receiver_loss_mask                             [B, Tr]  1 where receiver_input_ids[t] is a supervised answer token
  soft_start                                     [B]      index of the first soft-token slot in the receiver row
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from latentjax.bridge.model import Bridge, BridgeConfig, BridgeOutput
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder
from latentjax.models.model import truncate_layers

Array = jax.Array


def resolve_layer(layer: int, num_layers: int) -> int:
    """HF `hidden_states` numbering: 0 = embeddings, i = after block i (N = final, normed); negatives from the end."""
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(f"sender layer must be in [-{num_layers + 1}, {num_layers}] for a {num_layers}-layer "
                         f"model, got {layer}.")
    return resolved


@dataclasses.dataclass(frozen=True)
class SenderTap:
    """The part of the sender that runs: `config` has exactly the layers below the tap."""

    config: DecoderConfig
    layer: int  # resolved, 0..N
    final: bool  # the tap is HF's last hidden state (after the final norm)

    @classmethod
    def make(cls, config: DecoderConfig, layer: int) -> "SenderTap":
        layer = resolve_layer(layer, config.num_layers)
        return cls(config=config.replace(num_layers=layer), layer=layer, final=layer == config.num_layers)


def sender_params_for_tap(config: DecoderConfig, params: Any, layer: int) -> Any:
    """Keep only what the tap needs: the layers below it, the embedding (and the final norm at the last layer)."""
    layer = resolve_layer(layer, config.num_layers)
    _, params = truncate_layers(config, params, layer)
    return {k: v for k, v in params.items() if k != "lm_head"}


def sender_hidden(tap: SenderTap, params: Any, ids: Array, mask: Array) -> Array:
    """HF's `hidden_states[layer]` of the sender for left-padded ids [B, T] -> [B, T, sender_dim]."""
    dec = Decoder(tap.config)
    if tap.layer == 0:
        return dec.apply({"params": params}, ids, method=Decoder.embed)
    out = dec.apply({"params": params}, ids, mask, return_logits=False, apply_final_norm=tap.final)
    return out.hidden


def insert_soft_tokens(embeds: Array, soft: Array, soft_start: Array) -> Array:
    """Replace slots soft_start[b] .. soft_start[b] + K - 1 of embeds [B, T, D] by soft [B, K, D]."""
    k = soft.shape[1]
    t = jnp.arange(embeds.shape[1])[None, :]
    rel = t - soft_start[:, None]
    is_soft = (rel >= 0) & (rel < k)
    gathered = jnp.take_along_axis(soft, jnp.clip(rel, 0, k - 1)[..., None], axis=1)
    return jnp.where(is_soft[..., None], gathered.astype(embeds.dtype), embeds)


def answer_nll(logits: Array, ids: Array, loss_mask: Array) -> tuple[Array, Array]:
    """Summed next-token NLL over supervised positions and their count (logits at t predict ids at t + 1)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    mask = loss_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask)


def diversity_loss(soft: Array) -> Array:
    """Mean off-diagonal cosine similarity between the flattened [K * D] soft-token sets of a batch (0 if B == 1)."""
    b = soft.shape[0]
    if b < 2:
        return jnp.zeros((), jnp.float32)
    v = soft.reshape(b, -1).astype(jnp.float32)
    v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    sim = v @ v.T
    return (jnp.sum(sim) - jnp.trace(sim)) / (b * (b - 1))


@dataclasses.dataclass(frozen=True)
class BridgedModel:
    """Static description of sender tap, bridge and receiver; its methods are pure and jittable."""

    tap: SenderTap
    bridge: BridgeConfig
    receiver: DecoderConfig
    diversity_weight: float = 0.1

    def soft_tokens(self, bridge_vars: Any, frozen: Any, sender_ids: Array, sender_mask: Array) -> BridgeOutput:
        hidden = jax.lax.stop_gradient(sender_hidden(self.tap, frozen["sender"], sender_ids, sender_mask))
        return Bridge(self.bridge).apply(bridge_vars, hidden, sender_mask)

    def receiver_embed(self, frozen: Any, ids: Array) -> Array:
        return Decoder(self.receiver).apply({"params": frozen["receiver"]}, ids, method=Decoder.embed)

    def receiver_logits(self, frozen: Any, embeds: Array, mask: Array) -> Array:
        out = Decoder(self.receiver).apply({"params": frozen["receiver"]}, inputs_embeds=embeds, attention_mask=mask)
        return out.logits

    def loss(self, bridge_vars: Any, frozen: Any, batch: dict, rng: Optional[Array] = None
             ) -> tuple[Array, dict]:
        """LM cross-entropy on the answer tokens + diversity_weight * batch diversity loss, and metrics."""
        del rng
        out = self.soft_tokens(bridge_vars, frozen, batch["sender_input_ids"], batch["sender_attention_mask"])
        ids = batch["receiver_input_ids"]
        embeds = insert_soft_tokens(self.receiver_embed(frozen, ids), out.soft_tokens, batch["soft_start"])
        logits = self.receiver_logits(frozen, embeds, batch["receiver_attention_mask"])
        nll, count = answer_nll(logits, ids, batch["receiver_loss_mask"])
        lm = nll / jnp.maximum(count, 1.0)
        div = diversity_loss(out.soft_tokens)
        pre = out.pre_norm.astype(jnp.float32)
        soft = out.soft_tokens.astype(jnp.float32)
        metrics = {
            "lm_loss": lm,
            "diversity_loss": div,
            "z_variance": jnp.mean(jnp.var(pre.reshape(-1, pre.shape[-1]), axis=0)),
            "soft_rms": jnp.mean(jnp.sqrt(jnp.mean(soft * soft, axis=-1))),
            "answer_tokens": count,
        }
        return lm + self.diversity_weight * div, metrics

    def prompt_embeds(self, bridge_vars: Any, frozen: Any, sender_ids: Array, sender_mask: Array,
                      primer_ids: Array) -> Array:
        """[primer] + [soft tokens] for every row ([B, P + K, D] in the receiver's dtype); primer_ids is [P]."""
        soft = self.soft_tokens(bridge_vars, frozen, sender_ids, sender_mask).soft_tokens
        b = soft.shape[0]
        primer = self.receiver_embed(frozen, jnp.broadcast_to(primer_ids[None], (b, primer_ids.shape[0])))
        return jnp.concatenate([primer, soft.astype(primer.dtype)], axis=1)

    def label_scores(self, frozen: Any, prefix: Array, label_ids: Array, label_mask: Array) -> Array:
        """Summed log-likelihood of each label's answer tokens after `prefix` ([B, P, D], e.g. `prompt_embeds`)
        -> [B, C]. label_ids / label_mask: [C, La], the right-padded answer tokens of each label."""
        return label_scores(self.receiver, frozen["receiver"], prefix, label_ids, label_mask)


def label_scores(config: DecoderConfig, params: Any, prefix: Array, label_ids: Array, label_mask: Array,
                 prefix_mask: Optional[Array] = None) -> Array:
    """Summed log-likelihood of each label's answer tokens after `prefix` embeddings [B, P, D] -> [B, C], for the
    decoder (config, params). `prefix_mask` [B, P] marks real prefix slots (left padding; None = all real);
    label_ids / label_mask: [C, La], the right-padded answer tokens of each label."""
    b, p, d = prefix.shape
    c, la = label_ids.shape
    dec = Decoder(config)
    answers = dec.apply({"params": params}, label_ids, method=Decoder.embed).astype(prefix.dtype)  # [C, La, D]
    embeds = jnp.concatenate([jnp.broadcast_to(prefix[:, None], (b, c, p, d)),
                              jnp.broadcast_to(answers[None], (b, c, la, d))], axis=2).reshape(b * c, p + la, d)
    lmask = jnp.broadcast_to(label_mask[None].astype(bool), (b, c, la)).reshape(b * c, la)
    pmask = (jnp.ones((b, p), bool) if prefix_mask is None else prefix_mask.astype(bool))
    pmask = jnp.broadcast_to(pmask[:, None], (b, c, p)).reshape(b * c, p)
    mask = jnp.concatenate([pmask, lmask], axis=1)
    logits = dec.apply({"params": params}, inputs_embeds=embeds, attention_mask=mask).logits[:, p - 1:-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # the predictions of the answer tokens
    ids = jnp.broadcast_to(label_ids[None], (b, c, la)).reshape(b * c, la)
    ll = jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(lmask, ll, 0.0), axis=-1).reshape(b, c)
