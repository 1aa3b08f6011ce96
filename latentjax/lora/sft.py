"""Supervised fine-tuning data and loss: prompt/completion pairs, loss on completion tokens, length buckets.

Examples are tokenized once into `input_ids` and `loss_mask` (True on the tokens the model must predict: the
completion, or every token but the first when `completion_only=False`). Batches are right-padded to the smallest
bucket length that fits, so a run compiles one step per bucket, and each batch holds rows of one bucket. (No
packing: the decoder's mask is causal by position, so rows are never concatenated.)
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentjax.lora.adapter import lora_apply
from latentjax.lora.config import LoraConfig
from latentjax.models.config import DecoderConfig
from latentjax.parallel import rules as rules_lib
from latentjax.train.chunked_loss import decoder_token_losses

BATCH_AXES = {"input_ids": ("batch", "length"), "attention_mask": ("batch", "length"),
              "loss_mask": ("batch", "length")}


# ----------------------------------------------------------------------------------------------------- encoding
def encode_example(tokenizer: Any, prompt: str, completion: str, *, chat: bool = True, system: Optional[str] = None,
                   prompt_template: str = "{prompt}", completion_only: bool = True,
                   max_length: Optional[int] = None) -> Optional[dict]:
    """Token ids and loss mask of one example, or None when nothing of the completion fits in `max_length`.

    Tokenization is `latentjax.data.TokenizePromptCompletion`'s. chat=True: the prompt is the chat template of
    (system,) user turn with the generation prompt; the completion is the rest of the template rendered with the
    assistant turn (so it ends with the template's end-of-turn token). chat=False:
    `prompt_template.format(prompt=...)` with the tokenizer's special tokens (BOS), then the completion and EOS.
    completion_only=False puts the loss on every token (the first has nothing to predict it).
    """
    from latentjax.data.transforms import TokenizePromptCompletion

    tokenize = TokenizePromptCompletion(tokenizer, chat_template=chat, system=system or None, add_eos=True)
    text = prompt if chat else prompt_template.format(prompt=prompt)
    ex = tokenize.map({"prompt": text, "completion": completion})
    ids, mask = ex["input_ids"].astype(np.int32), ex["loss_mask"].astype(bool)
    if not completion_only:
        mask = np.arange(len(ids)) > 0
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    if completion_only and not mask.any():
        return None
    return {"input_ids": ids, "loss_mask": mask}


def encode_examples(tokenizer: Any, rows: Iterable[dict], prompt_field: str = "prompt",
                    completion_field: str = "completion", **kw) -> tuple[list[dict], int]:
    """Encode rows of dicts; returns (examples, number dropped because the completion did not fit)."""
    out, dropped = [], 0
    for row in rows:
        ex = encode_example(tokenizer, row[prompt_field], row[completion_field], **kw)
        if ex is None:
            dropped += 1
        else:
            out.append(ex)
    return out, dropped


def default_buckets(max_length: int, smallest: int = 64) -> tuple[int, ...]:
    """Powers of two from `smallest` up to `max_length` (which is always the last bucket)."""
    out, n = [], smallest
    while n < max_length:
        out.append(n)
        n *= 2
    return tuple(out) + (max_length,)


def pad_batch(examples: Sequence[dict], length: int, rows: int, pad_id: int = 0) -> dict:
    """Right-padded numpy batch of `rows` rows (`latentjax.data.Pad`); missing rows are all padding, no loss."""
    from latentjax.data.transforms import Pad

    pad = Pad(length, pad_id=pad_id)
    empty = {"input_ids": np.zeros(0, np.int32), "loss_mask": np.zeros(0, np.int32)}
    padded = [pad.pad(ex, length) for ex in list(examples) + [empty] * (rows - len(examples))]
    return {k: np.stack([ex[k] for ex in padded]) for k in ("input_ids", "attention_mask", "loss_mask")}


def _bucket_of(length: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"An example of {length} tokens is longer than the largest bucket {buckets[-1]}.")


class BucketedBatches:
    """Infinite, deterministic, resumable iterator of right-padded batches, each from one length bucket.

    Every epoch shuffles the examples with (seed, epoch), cuts each bucket into batches of `batch_size` (the
    global batch; a bucket's remainder waits for another epoch's shuffle), and shuffles the batch order. With
    several processes each yields its own contiguous `batch_size / process_count` rows of every global batch.
    State is two integers (`get_state` / `set_state`), like a grain iterator's.
    """

    def __init__(self, examples: Sequence[dict], batch_size: int, buckets: Sequence[int], *, seed: int = 0,
                 pad_id: int = 0, process_index: Optional[int] = None, process_count: Optional[int] = None):
        self.examples = list(examples)
        self.batch_size = int(batch_size)
        self.buckets = tuple(sorted(buckets))
        self.seed = int(seed)
        self.pad_id = int(pad_id)
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if self.batch_size % self.process_count:
            raise ValueError(f"batch_size {batch_size} does not divide over {self.process_count} processes.")
        self._lengths = np.asarray([_bucket_of(len(e["input_ids"]), self.buckets) for e in self.examples])
        self.epoch, self.index = 0, 0
        self._plan = self._epoch_plan(0)
        if not self._plan:
            raise ValueError(f"{len(self.examples)} examples make no full batch of {batch_size} in any length "
                             f"bucket {self.buckets}; lower the batch size or use fewer buckets.")

    def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        plan = []
        for b in self.buckets:
            members = order[self._lengths[order] == b]
            for start in range(0, len(members) - self.batch_size + 1, self.batch_size):
                plan.append((b, members[start:start + self.batch_size]))
        return [plan[i] for i in rng.permutation(len(plan))]

    @property
    def steps_per_epoch(self) -> int:
        return len(self._plan)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = self._epoch_plan(self.epoch)
        length, members = self._plan[self.index]
        self.index += 1
        per = self.batch_size // self.process_count
        mine = members[self.process_index * per:(self.process_index + 1) * per]
        return pad_batch([self.examples[i] for i in mine], length, per, self.pad_id)

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._plan = self._epoch_plan(self.epoch)


def eval_batches(examples: Sequence[dict], batch_size: int, buckets: Sequence[int], pad_id: int = 0) -> list[dict]:
    """Every example exactly once, in bucketed batches (the last of a bucket padded with empty rows)."""
    buckets = tuple(sorted(buckets))
    by_bucket: dict[int, list] = {}
    for ex in examples:
        by_bucket.setdefault(_bucket_of(len(ex["input_ids"]), buckets), []).append(ex)
    out = []
    for length in sorted(by_bucket):
        group = by_bucket[length]
        for start in range(0, len(group), batch_size):
            out.append(pad_batch(group[start:start + batch_size], length, batch_size, pad_id))
    return out


# ----------------------------------------------------------------------------------------------------- loss
def token_losses(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array,
                 attention_mask: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Next-token cross-entropy summed over target tokens: (loss sum, target count, correct argmax count).

    Position t's logits predict token t + 1; token t + 1 counts iff loss_mask[t + 1] (and attention_mask)."""
    logits = logits[:, :-1].astype(jnp.float32)
    labels = input_ids[:, 1:]
    weight = loss_mask[:, 1:].astype(bool)
    if attention_mask is not None:
        weight &= attention_mask[:, 1:].astype(bool)
    weight = weight.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(ce * weight), jnp.sum(weight), jnp.sum(correct * weight)


def lora_token_losses(model_config: DecoderConfig, lora_cfg: LoraConfig, frozen: Any, trainable: Any, batch: dict,
                      *, loss_chunk: int = 0, loss_backward: str = "fused", rng: Optional[jax.Array] = None,
                      deterministic: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`token_losses` of the adapted model on `batch`. loss_chunk > 0: from the final hidden states, that many
    sequence positions at a time (`latentjax.train.chunked_loss`, backward `loss_backward`: "fused" (the base's
    head is frozen) or "recompute"), never holding the full [B, T, V] logits. Call inside
    `rules_lib.axis_rules(...)`."""
    ids, attn, loss_mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    out = lora_apply(model_config, frozen, trainable, lora_cfg, ids, attn, rng=rng, deterministic=deterministic,
                     return_logits=not loss_chunk)
    if not loss_chunk:
        return token_losses(out.logits, ids, loss_mask, attn)
    return decoder_token_losses(model_config, frozen, out.hidden, ids, loss_mask, attn, chunk=int(loss_chunk),
                                backward=loss_backward)


def make_loss_fn(model_config: DecoderConfig, lora_cfg: LoraConfig, rules=rules_lib.DEFAULT_RULES,
                 loss_chunk: int = 0, loss_backward: str = "fused"):
    """LossFn for the training loop: trainable = LoRA params, frozen = base params; mean loss per target token.
    loss_chunk > 0 computes the loss that many sequence positions at a time (see `lora_token_losses`)."""

    def loss_fn(trainable, frozen, batch, rng):
        with rules_lib.axis_rules(rules):
            total, count, correct = lora_token_losses(model_config, lora_cfg, frozen, trainable, batch,
                                                      loss_chunk=loss_chunk, loss_backward=loss_backward, rng=rng,
                                                      deterministic=rng is None)
        denom = jnp.maximum(count, 1.0)
        loss = total / denom
        return loss, {"loss": loss, "target_tokens": count, "token_accuracy": correct / denom}

    return loss_fn


def make_eval_fn(model_config: DecoderConfig, lora_cfg: LoraConfig, frozen: Any, batches: Sequence[dict],
                 mesh: jax.sharding.Mesh, rules=rules_lib.DEFAULT_RULES, prefix: str = "", loss_chunk: int = 0):
    """(trainable, step) -> {loss, tokens, token_accuracy, perplexity} (the loop logs them as eval/...):
    token-weighted over all `batches` (global batches, all rows real or empty; with several processes each
    passes the same list and contributes its rows). loss_chunk as in `make_loss_fn`."""

    @jax.jit
    def sums(trainable, batch):
        with rules_lib.axis_rules(rules):
            return lora_token_losses(model_config, lora_cfg, frozen, trainable, batch, loss_chunk=loss_chunk)

    def place(batch):
        n, pc, pi = batch["input_ids"].shape[0], jax.process_count(), jax.process_index()
        per = n // pc
        return {k: jax.make_array_from_process_local_data(
            rules_lib.batch_sharding(mesh, v.ndim, rules), v[pi * per:(pi + 1) * per], v.shape)
            for k, v in batch.items()}

    def eval_fn(trainable, step):
        del step
        total = count = correct = 0.0
        with jax.set_mesh(mesh):
            for batch in batches:
                t, c, k = sums(trainable, place(batch))
                total, count, correct = total + float(t), count + float(c), correct + float(k)
        denom = max(count, 1.0)
        return {f"{prefix}loss": total / denom, f"{prefix}tokens": count, f"{prefix}token_accuracy": correct / denom,
                f"{prefix}perplexity": math.exp(min(total / denom, 50.0))}

    return eval_fn
