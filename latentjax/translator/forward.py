"""The translated forward and the weighted loss: source (up to its tap) -> translator -> target fed
`[K soft tokens] + [text]`.

Pure functions of (translator variables, frozen weights, batch, rng); the frozen weights are
`{"sender": ..., "receiver": ...}` as in `latentjax.bridge.forward` (whose sender tap, soft-token insertion and
answer NLL are reused here). Positions (`positions`):
  "shifted"     soft tokens at 0..K-1, the text continuing at K (the reference)
  "text_first"  the text keeps the positions it has without soft tokens (0, 1, ...); the soft tokens sit at
                -K..-1 (RoPE is relative, so only differences matter)

Loss terms (each has a weight in `LossWeights`, all are logged as `<name>_loss` whether weighted or not):
  nll               target cross-entropy on the gold solution
  kl                KL(text-only target || bridged target) on the first `kl_tokens` solution predictions, from
                    step > kl_warmup_steps (per row, from the batch's `step`)
  rope_alignment    the same KL on every text prediction (context and solution) at matched text positions
  prompt_alignment  MSE between the K soft tokens and the target embeddings of the first K prompt tokens
  info_nce          InfoNCE (temperature) of mean-pooled soft tokens against mean-pooled prompt embeddings
  prompt_contrast   the reverse direction (prompt embeddings against soft tokens)
  aux_probe         MSE between the pooled soft tokens and the pooled prompt embeddings
  format            differentiable surrogate: 1 - max over the solution span of p('####'); the reference's
                    argmax rate is logged as `format_miss_rate` (a monitor, no gradient)
  token_alignment   MSE between the soft tokens and the teacher embeddings (first K target tokens of the teacher)
  dit_flow          rectified-flow velocity MSE (dit only)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from latentjax.bridge.forward import SenderTap, answer_nll, insert_soft_tokens, sender_hidden
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder
from latentjax.translator import losses as L
from latentjax.translator.modules import (CrossTranslator, DiTTranslator, TranslatorConfig, euler_sample, guided,
                                          rms_match)

Array = jax.Array
POSITIONS = ("shifted", "text_first")
TERMS = ("nll", "kl", "rope_alignment", "prompt_alignment", "info_nce", "prompt_contrast", "aux_probe", "format",
         "token_alignment", "dit_flow")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    nll: float = 1.0
    kl: float = 0.03
    rope_alignment: float = 0.0
    prompt_alignment: float = 0.001
    info_nce: float = 0.05
    prompt_contrast: float = 0.0
    aux_probe: float = 0.0
    format: float = 0.1
    token_alignment: float = 0.0
    dit_flow: float = 0.1
    kl_tokens: int = 20
    kl_warmup_steps: int = 0
    temperature: float = 0.07


def text_positions(mask: Array, num_soft: int, mode: str) -> Array:
    """Positions of a row whose first real slots are the K soft tokens: cumulative count of real slots - 1, minus
    K under "text_first"."""
    if mode not in POSITIONS:
        raise ValueError(f"translator.positions must be one of {POSITIONS}, got {mode!r}.")
    pos = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    return pos - num_soft if mode == "text_first" else pos


def shifted_apply(config: DecoderConfig, num_soft: int, positions: str, params, input_ids, attention_mask,
                  pos, inputs_embeds, cache):
    """`generate`'s apply_fn with the translator's positions: the embeddings prefill gets `text_positions`;
    decode steps continue from the cache (one past the largest position seen)."""
    if inputs_embeds is not None and pos is None:
        pos = text_positions(attention_mask, num_soft, positions)
    return Decoder(config).apply({"params": params}, input_ids, attention_mask, pos, inputs_embeds, cache)


@dataclasses.dataclass(frozen=True)
class TranslatorModel:
    """Static description of source tap, translator and target; methods are pure and jittable."""

    tap: SenderTap
    translator: TranslatorConfig
    receiver: DecoderConfig
    weights: LossWeights = LossWeights()
    positions: str = "shifted"
    format_token_id: int = 0

    @property
    def num_soft(self) -> int:
        return self.translator.num_tokens

    def apply_fn(self):
        """The generation forward (one object per model, so `generate` compiles once)."""
        return functools.partial(shifted_apply, self.receiver, self.num_soft, self.positions)

    def source_states(self, frozen: Any, ids: Array, mask: Array) -> Array:
        return jax.lax.stop_gradient(sender_hidden(self.tap, frozen["sender"], ids, mask))

    def embed(self, frozen: Any, ids: Array) -> Array:
        return Decoder(self.receiver).apply({"params": frozen["receiver"]}, ids, method=Decoder.embed)

    def logits(self, frozen: Any, embeds: Array, mask: Array, positions: Optional[Array] = None) -> Array:
        return Decoder(self.receiver).apply({"params": frozen["receiver"]}, inputs_embeds=embeds,
                                            attention_mask=mask, positions=positions).logits

    # --- soft tokens -------------------------------------------------------------------------------------------
    def train_soft_tokens(self, variables: Any, src: Array, src_mask: Array, teacher: Array, teacher_mask: Array,
                          rng: Array) -> tuple[Array, Array]:
        """(soft tokens [B, K, Dt], flow loss) in training (dropout on; DiT: one noised teacher endpoint)."""
        cfg = self.translator
        drop_rng, noise_rng, t_rng, cfg_rng, sample_rng = jax.random.split(rng, 5)
        if cfg.kind == "cross":
            soft = CrossTranslator(cfg).apply(variables, src, src_mask, deterministic=False,
                                              rngs={"dropout": drop_rng})
            return soft, jnp.zeros((), jnp.float32)
        d, dit = cfg.dit, DiTTranslator(cfg)
        b = src.shape[0]
        drop = (jax.random.bernoulli(cfg_rng, d.cfg_dropout, (b,)) if d.cfg_scale > 0 and d.cfg_dropout > 0
                else None)
        cond = dit.apply(variables, src, src_mask, drop, method=DiTTranslator.condition)
        x1 = teacher.astype(jnp.float32)
        z = jax.random.normal(noise_rng, x1.shape, jnp.float32)
        t = jax.random.uniform(t_rng, (b,), jnp.float32)
        x_t = (1 - t)[:, None, None] * z + t[:, None, None] * x1
        v = dit.apply(variables, x_t, t, cond, method=DiTTranslator.velocity).astype(jnp.float32)
        flow = L.flow_loss(v, x1, z, teacher_mask)
        if d.train_output == "x0_hat":
            out = x_t + v * (1 - t)[:, None, None]
        else:
            out = self._sample(variables, cond, sample_rng, d.train_steps)
        return rms_match(out, cfg.target_rms), flow

    def _sample(self, variables: Any, cond: Array, rng: Array, steps: int) -> Array:
        cfg, dit = self.translator, DiTTranslator(self.translator)
        field = lambda x, t, c: dit.apply(variables, x, t, c, method=DiTTranslator.velocity)  # noqa: E731
        null = jnp.broadcast_to(variables["params"]["null_cond"].astype(cond.dtype), cond.shape)
        z = jax.random.normal(rng, (cond.shape[0], cfg.num_tokens, cfg.target_dim), jnp.float32)
        return euler_sample(guided(field, cond, null, cfg.dit.cfg_scale), z, steps)

    def eval_soft_tokens(self, variables: Any, frozen: Any, ids: Array, mask: Array, rng: Array) -> Array:
        """Soft tokens for evaluation: deterministic cross translator, or DiT Euler sampling (eval_steps, CFG)."""
        cfg = self.translator
        src = self.source_states(frozen, ids, mask)
        if cfg.kind == "cross":
            return CrossTranslator(cfg).apply(variables, src, mask, deterministic=True)
        cond = DiTTranslator(cfg).apply(variables, src, mask, method=DiTTranslator.condition)
        return rms_match(self._sample(variables, cond, rng, cfg.dit.eval_steps), cfg.target_rms)

    def prefix_embeds(self, variables: Any, frozen: Any, ids: Array, mask: Array, context_ids: Array,
                      rng: Array) -> Array:
        """[K soft tokens] + [embedded left-padded context] for generation, in the target's dtype."""
        soft = self.eval_soft_tokens(variables, frozen, ids, mask, rng)
        ctx = self.embed(frozen, context_ids)
        return jnp.concatenate([soft.astype(ctx.dtype), ctx], axis=1)

    # --- loss --------------------------------------------------------------------------------------------------
    def loss(self, variables: Any, frozen: Any, batch: dict, rng: Optional[Array] = None) -> tuple[Array, dict]:
        w, k = self.weights, self.num_soft
        rng = jax.random.PRNGKey(0) if rng is None else rng
        src_mask = batch["sender_attention_mask"]
        src = self.source_states(frozen, batch["sender_input_ids"], src_mask)
        teacher = self.embed(frozen, batch["teacher_input_ids"])
        tmask = batch["teacher_attention_mask"]
        soft, flow = self.train_soft_tokens(variables, src, src_mask, teacher, tmask, rng)

        ids, mask, lmask = batch["receiver_input_ids"], batch["receiver_attention_mask"], batch["receiver_loss_mask"]
        embeds = insert_soft_tokens(self.embed(frozen, ids), soft, jnp.zeros((ids.shape[0],), jnp.int32))
        logits = self.logits(frozen, embeds, mask, text_positions(mask, k, self.positions))
        nll_sum, count = answer_nll(logits, ids, lmask)
        terms = {"nll": nll_sum / jnp.maximum(count, 1.0)}

        pred_mask = lmask[:, 1:]  # logits[:, t] predict ids[:, t + 1]
        terms["format"] = L.format_surrogate(logits[:, :-1], pred_mask, self.format_token_id)
        zero = jnp.zeros((), jnp.float32)
        if w.kl > 0 or w.rope_alignment > 0:  # the text-only target on the same text (no soft tokens)
            base = jax.lax.stop_gradient(self.logits(frozen, self.embed(frozen, ids[:, k:]), mask[:, k:]))
            bridged = logits[:, k:]
            terms["kl"] = L.masked_kl(base[:, :-1], bridged[:, :-1], L.first_n_mask(lmask[:, k + 1:], w.kl_tokens))
            terms["rope_alignment"] = L.masked_kl(base[:, :-1], bridged[:, :-1], mask[:, k + 1:])
        else:
            terms["kl"] = terms["rope_alignment"] = zero

        pids, pmask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        prompt = self.embed(frozen, pids)
        terms["prompt_alignment"] = L.masked_mse(soft, prompt[:, :k], pmask[:, :k])
        soft_pool = jnp.mean(soft.astype(jnp.float32), axis=1)
        prompt_pool = L.masked_mean_pool(prompt, pmask)
        terms["info_nce"] = L.info_nce(soft_pool, prompt_pool, w.temperature)
        terms["prompt_contrast"] = L.info_nce(prompt_pool, soft_pool, w.temperature)
        terms["aux_probe"] = jnp.mean(jnp.square(soft_pool - prompt_pool))
        terms["token_alignment"] = L.masked_mse(soft, teacher, tmask)
        terms["dit_flow"] = flow

        kl_on = jnp.mean((batch["step"] > w.kl_warmup_steps).astype(jnp.float32))
        scale = {name: float(getattr(w, name)) for name in TERMS}
        total = sum(scale[n] * terms[n] * (kl_on if n == "kl" else 1.0) for n in TERMS if scale[n] != 0)
        soft_f = soft.astype(jnp.float32)
        metrics = {f"{n}_loss": terms[n] for n in TERMS}
        metrics.update(
            format_miss_rate=L.format_monitor(logits[:, :-1], pred_mask, self.format_token_id),
            kl_active=kl_on, soft_only_fraction=jnp.mean(batch["soft_only"].astype(jnp.float32)),
            soft_rms=jnp.mean(jnp.sqrt(jnp.mean(soft_f * soft_f, axis=-1))),
            soft_batch_std=jnp.mean(jnp.std(soft_pool, axis=0)),  # ~0 when every row gets the same tokens
            answer_tokens=count)
        return total, metrics


__all__ = ["LossWeights", "POSITIONS", "TERMS", "TranslatorModel", "shifted_apply", "text_positions"]
