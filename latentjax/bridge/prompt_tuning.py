"""Prompt-tuning baseline of the Telepathy bridge (registry name "prompt_tuning"): K learned vectors on the frozen
receiver, no sender, trained through the one training loop.

The soft prompt has the bridge's output head (telepathy_reference.md §6.3): K vectors initialised N(0, 0.02^2),
each RMS-normalised and multiplied by one learned scale initialised to the receiver's median embedding RMS (or a
fixed value). Two layouts (config.prompt_tuning.layout):
  primer  the seed's: `[primer] + [soft prompt] + [answer]`; the input text is never shown, so the prompt can only
          learn a constant answer (the seed measured chance: SST-2 49.5%)
  text    `[BOS] + [soft prompt] + [direct text prompt] + [answer]` (the reference's later "unified" script): the
          receiver reads the text (the receiver_text baseline's prompt) and the prompt is tuned on top of it
The loss is the bridge's: cross-entropy on the answer tokens only (`forward.answer_nll`, soft tokens placed with
`forward.insert_soft_tokens`). Evaluation is the text baselines' `PromptRunner` with the soft prompt inserted:
greedy generation scored by the task's rule, label scoring, Wilson intervals, per-class, confusion, JSONL + summary
in config.eval.output_dir/step_N/ as `{task}_prompt_tuning_{quick|final}`. Trainable = the soft prompt only;
checkpoints hold nothing else.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.bridge import baselines as bl
from latentjax.bridge.batching import RECEIVER_BUCKET, answer_ids, buckets, token_ids
from latentjax.bridge.evaluate import eval_dir, flat_metrics
from latentjax.bridge.forward import answer_nll, insert_soft_tokens
from latentjax.bridge.model import RMS_EPS, median_row_rms
from latentjax.data.pipeline import make_loader
from latentjax.data.transforms import Pad, PadBatch
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder
from latentjax.parallel import rules as rules_lib
from latentjax.tasks import select
from latentjax.train.experiment import Experiment

LAYOUTS = ("primer", "text")
BATCH_KEYS = ("receiver_input_ids", "receiver_attention_mask", "receiver_loss_mask", "soft_start")
BATCH_AXES = {"receiver_input_ids": ("batch", "length"), "receiver_attention_mask": ("batch", "length"),
              "receiver_loss_mask": ("batch", "length"), "soft_start": ("batch",)}


def prompt_tuning_section(num_tokens: int = 8, layout: str = "primer", **overrides: Any) -> ConfigDict:
    """`config.prompt_tuning`: K, layout (primer | text), init std, output scale (embedding_median_rms | fixed with
    output_scale_value), and the longest text prompt (text layout; longer ones keep their end)."""
    section = ConfigDict(dict(num_tokens=int(num_tokens), layout=layout, init_std=0.02,
                              output_scale="embedding_median_rms", output_scale_value=0.03, max_prompt_tokens=512))
    section.update(overrides)
    return section


class SoftPrompt(nn.Module):
    """K vectors -> per-token RMS normalisation x one learned scale -> [K, D] float32."""

    num_tokens: int
    dim: int
    init_std: float = 0.02
    scale_init: float = 0.03

    @nn.compact
    def __call__(self) -> jax.Array:
        prompt = self.param("prompt", nn.with_logical_partitioning(nn.initializers.normal(self.init_std),
                                                                   ("bridge_latents", "bridge_out")),
                            (self.num_tokens, self.dim), jnp.float32)
        scale = self.param("output_scale", nn.with_logical_partitioning(nn.initializers.constant(self.scale_init),
                                                                        ("scalar",)), (1,), jnp.float32)
        rms = jnp.sqrt(jnp.mean(prompt * prompt, axis=-1, keepdims=True) + RMS_EPS)
        return prompt / rms * scale


@dataclasses.dataclass(frozen=True)
class PromptTunedModel:
    """The receiver with a soft prompt; methods are pure and jittable."""

    soft_prompt: SoftPrompt
    receiver: DecoderConfig

    def soft(self, trainable: Any) -> jax.Array:
        return self.soft_prompt.apply(trainable)

    def loss(self, trainable: Any, frozen: Any, batch: dict, rng: Optional[jax.Array] = None
             ) -> tuple[jax.Array, dict]:
        """Cross-entropy on the answer tokens of `[...] + [soft prompt] + [...] + [answer]` rows."""
        del rng
        soft = self.soft(trainable)
        ids = batch["receiver_input_ids"]
        dec = Decoder(self.receiver)
        embeds = dec.apply({"params": frozen["receiver"]}, ids, method=Decoder.embed)
        soft_b = jnp.broadcast_to(soft[None], (ids.shape[0],) + soft.shape)
        embeds = insert_soft_tokens(embeds, soft_b, batch["soft_start"])
        logits = dec.apply({"params": frozen["receiver"]}, inputs_embeds=embeds,
                           attention_mask=batch["receiver_attention_mask"]).logits
        nll, count = answer_nll(logits, ids, batch["receiver_loss_mask"])
        lm = nll / jnp.maximum(count, 1.0)
        return lm, {"lm_loss": lm, "soft_rms": jnp.mean(jnp.sqrt(jnp.mean(soft * soft, axis=-1))),
                    "answer_tokens": count}


@dataclasses.dataclass
class EncodePromptTuning(grain.transforms.Map):
    """A text example -> receiver ids `before + K slots + after (+ answer)`, loss mask on the answer, soft_start.
    primer layout: before = the primer, after = nothing; text layout: before = BOS (if the tokenizer adds one),
    after = the rest of the direct text prompt."""

    tokenizer: Any
    task: Any
    num_tokens: int
    layout: str
    max_prompt_tokens: int = 512
    with_answer: bool = True

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"prompt_tuning.layout must be one of {LAYOUTS}, got {self.layout!r}.")
        self.primer_ids = token_ids(self.tokenizer, self.task.primer, False)
        self.fill_id = self.tokenizer.pad_token_id or 0

    def parts(self, ex: dict) -> tuple[list[int], list[int]]:
        if self.layout == "primer":
            return list(self.primer_ids), []
        ids = token_ids(self.tokenizer, bl.direct_prompt(self.task, ex["text"]), True)
        bos = self.tokenizer.bos_token_id
        before, after = (ids[:1], ids[1:]) if bos is not None and ids and ids[0] == bos else ([], ids)
        return before, after[-self.max_prompt_tokens:] if self.max_prompt_tokens else after

    def prompt(self, ex: dict) -> tuple[list[int], int]:
        """The evaluation prefix (no answer) and where its soft slots start."""
        before, after = self.parts(ex)
        return before + [self.fill_id] * self.num_tokens + after, len(before)

    def map(self, ex: dict) -> dict:
        row, start = self.prompt(ex)
        answer = answer_ids(self.tokenizer, ex["answer"], self.task.answer_eos) if self.with_answer else []
        loss = np.zeros(len(row) + len(answer), np.int32)
        loss[len(row):] = 1
        return {"receiver_input_ids": np.asarray(row + answer, np.int32), "receiver_loss_mask": loss,
                "soft_start": np.int32(start)}


def pad_batch(pad_id: int, max_tokens: int = 4096) -> PadBatch:
    return _PromptPadBatch(pad=[Pad(buckets(RECEIVER_BUCKET, max_tokens), pad_id=pad_id, side="right",
                                    prefix="receiver_")])


class _PromptPadBatch(PadBatch):
    def __call__(self, examples):
        batch = super().__call__(examples)
        return {k: batch[k] for k in BATCH_KEYS}


def evaluate_prompt(model: PromptTunedModel, trainable: Any, frozen: Any, runner: bl.PromptRunner,
                    encoder: EncodePromptTuning, examples, out_dir: Optional[str], name: str,
                    metric: str = "generation") -> dict:
    """Generation + label scoring with the soft prompt inserted; the text baselines' records and summary."""
    prompts = [encoder.prompt(ex) for ex in examples]
    soft = jax.jit(model.soft)(trainable)
    outputs, scores, _ = runner.run([p for p, _ in prompts], soft=soft, soft_at=[s for _, s in prompts])
    text = [runner.tokenizer.decode(p[s + encoder.num_tokens:]) for p, s in prompts]
    shown = [dict(ex, prompt=f"[{encoder.layout}] {t}" if t else f"[{encoder.layout}] {runner.task.primer}")
             for ex, t in zip(examples, text)]
    extra = {"model": None, "soft_tokens": encoder.num_tokens, "layout": encoder.layout}
    return bl.finish(runner.task, "prompt_tuning", shown, outputs, scores, generated=runner.generate,
                     max_new_tokens=runner.max_new_tokens, metric=metric, out_dir=out_dir, extra=extra, name=name)


def build(config: ConfigDict, mesh: Mesh) -> Experiment:
    from latentjax.bridge.experiment import decay_mask_fn, frozen_load_options, task_from_config
    from latentjax.models.model import from_pretrained

    rules = rules_lib.rules_from_config(dict(config.mesh.rules))
    pt = config.prompt_tuning
    task = task_from_config(config)
    m = config.model.receiver
    receiver = from_pretrained(m.path, dtype=m.dtype, mesh=mesh, rules=rules,
                               remat_policy=config.model.remat_policy, **frozen_load_options(config.model))
    tok = receiver.tokenizer
    if pt.output_scale not in ("embedding_median_rms", "fixed"):
        raise ValueError(f"prompt_tuning.output_scale must be embedding_median_rms or fixed, got {pt.output_scale!r}.")
    scale = (median_row_rms(receiver.params["embed_tokens"]["embedding"]) if pt.output_scale == "embedding_median_rms"
             else float(pt.output_scale_value))
    module = SoftPrompt(int(pt.num_tokens), receiver.config.hidden_size, float(pt.init_std), scale)
    model = PromptTunedModel(module, receiver.config)
    frozen = {"receiver": receiver.params}
    data_dir = config.task.data_dir or None

    train = bl.text_examples(task, task.train_split, data_dir)
    if int(config.task.train_limit):
        train = train[: int(config.task.train_limit)]
    encoder = EncodePromptTuning(tok, task, int(pt.num_tokens), str(pt.layout), int(pt.max_prompt_tokens))
    loader = make_loader(train, int(config.train.batch_size), int(config.data.shuffle_seed), transforms=[encoder],
                         worker_count=int(config.data.worker_count), batch_fn=pad_batch(tok.pad_token_id or 0))

    ecfg, bcfg = config.eval, config.get("baseline") or bl.baseline_section()
    eval_examples = bl.text_examples(task, ecfg.split or task.eval_split, data_dir)
    runner = bl.PromptRunner(receiver.config, receiver.params, tok, task, batch_size=int(ecfg.batch_size),
                             max_new_tokens=int(ecfg.max_new_tokens) or int(task.max_new_tokens),
                             generate=bool(ecfg.generate), label_scoring=bool(ecfg.label_scoring),
                             label_chunk=int(ecfg.label_chunk), mesh=mesh, rules=rules)

    def eval_fn(trainable, step: int) -> dict:
        final = step >= int(config.train.steps)
        num = int(ecfg.final_num_samples if final else ecfg.num_samples)
        chosen = select(eval_examples, num or None, ecfg.subset, int(ecfg.seed))
        out_dir = eval_dir(ecfg.output_dir, step) if ecfg.output_dir else None
        name = f"{task.name}_prompt_tuning_{'final' if final else 'quick'}"
        summary = evaluate_prompt(model, trainable, frozen, runner, encoder, chosen, out_dir, name,
                                  str(bcfg.primary_metric))
        return {**flat_metrics(summary), "n": summary["n"]}

    fingerprint = {"experiment": "prompt_tuning", "task": task.name, "receiver": m.path,
                   "num_tokens": int(pt.num_tokens), "layout": str(pt.layout), "dim": receiver.config.hidden_size}
    return Experiment(init_trainable=lambda rng: dict(module.init(rng)), frozen=frozen, loss_fn=model.loss,
                      train_data=loader, batch_axes=BATCH_AXES, eval_fn=eval_fn, fingerprint=fingerprint,
                      decay_mask=decay_mask_fn(config.bridge.get("weight_decay_on", "all")
                                               if "bridge" in config else "all"))


__all__ = ["EncodePromptTuning", "LAYOUTS", "PromptTunedModel", "SoftPrompt", "build", "evaluate_prompt",
           "prompt_tuning_section"]
