"""GSM8K prompts, the curriculum, and GSM8K rows -> padded translator batches (a grain transform for `make_loader`).

Training row (per example, `Encode.map_with_index`): the source reads the training prompt; the target row is
`[K soft-token slots] + [context] + [gold solution + EOS]` with the loss on the solution. The context comes from
`target_context_ids`, the ONE function the evaluator (`latentjax.translator.evaluate`) also calls for the text
after the soft tokens, so training and evaluation contexts cannot diverge (`tests/test_translator_context.py`):
  "mode"        (default) `soft_plus_text` = BOS + the prompt text + the format line, `soft_only` = BOS + the
                format line (the spec's evaluation contexts), in training and in evaluation;
  "reference"   nothing: the soft tokens alone, then the solution (the reference's training input), in training
                and in evaluation. Only for `soft_only`: the reference evaluated `soft_plus_text` with the prompt
                text it never trained with, which this library refuses (one context for both stages).
With the few-shot prefix off, the evaluation prompt is the training prompt, so the target's prefixes are
token-for-token the same; with it on, the same function reads the few-shot prompt instead.
The step of an element is `index // batch_size + 1` (its global position in the stream), so the curriculum
(`mode_at_step`) and the KL warmup are decided per element, deterministically, and survive resume.

Batch keys: sender_input_ids / sender_attention_mask [B, Ts] (left-padded); receiver_input_ids /
receiver_attention_mask / receiver_loss_mask [B, Tr] (right-padded, soft slots first); prompt_input_ids /
prompt_attention_mask [B, Tp >= K] (the training prompt in the target's tokenizer); teacher_input_ids /
teacher_attention_mask [B, K] (the first K target tokens of the DiT teacher text); step [B]; soft_only [B].
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

import grain
import numpy as np

from latentjax.bridge.batching import RECEIVER_BUCKET, SENDER_BUCKET, answer_ids, buckets, token_ids
from latentjax.data.transforms import Pad, PadBatch
from latentjax.eval.math_answers import gsm8k_gold

MODES = ("soft_plus_text", "soft_only")
CONTEXTS = ("reference", "mode")
TEACHERS = ("answer", "prompt")
TRAIN_PROMPT = ("Solve the problem step by step, then end your final line with '#### <number>'.\n\nProblem:\n"
                "{question}\n\nAnswer:")
FEW_SHOT_HEADER = "Answer the following questions step by step and end with '#### <number>'."
FORMAT_LINE = "\nAnswer the question above and end with '#### <number>'."
FEW_SHOT_SEED = 42

BATCH_KEYS = ("sender_input_ids", "sender_attention_mask", "receiver_input_ids", "receiver_attention_mask",
              "receiver_loss_mask", "prompt_input_ids", "prompt_attention_mask", "teacher_input_ids",
              "teacher_attention_mask", "step", "soft_only")
BATCH_AXES = {k: ("batch", "length") for k in BATCH_KEYS if k not in ("step", "soft_only")}
BATCH_AXES.update(step=("batch",), soft_only=("batch",))


def mode_at_step(step: int, mode: str, curriculum_steps: int) -> str:
    """The configured mode, or with a curriculum (curriculum_steps > 0) soft_plus_text before that step and
    soft_only from it on."""
    if mode not in MODES:
        raise ValueError(f"translator mode must be one of {MODES}, got {mode!r}.")
    if curriculum_steps > 0:
        return "soft_plus_text" if step < curriculum_steps else "soft_only"
    return mode


def rationale_and_answer(solution: str) -> tuple[str, str]:
    """A GSM8K `answer` field -> (the worked rationale before '####', the gold number)."""
    return solution.split("####")[0].strip(), gsm8k_gold(solution)


def few_shot_prefix(train_rows: Sequence[dict], num_shots: int = 8, seed: int = FEW_SHOT_SEED) -> str:
    """The 8-shot chain-of-thought prefix, built once from `num_shots` training rows drawn with `seed`."""
    if num_shots <= 0:
        return ""
    idx = random.Random(seed).sample(range(len(train_rows)), num_shots)
    parts = [FEW_SHOT_HEADER]
    for i in idx:
        rationale, answer = rationale_and_answer(train_rows[i]["answer"])
        parts.append(f"Q: {train_rows[i]['question']}\nA: {rationale}\n#### {answer}")
    return "\n\n".join(parts)


def eval_prompt(question: str, prefix: str) -> str:
    """The evaluation prompt: the few-shot prefix (if any) then the test item; without a prefix, the training
    prompt."""
    if not prefix:
        return TRAIN_PROMPT.format(question=question)
    return f"{prefix}\n\nQ: {question}\nA: Let's think step by step.\n\nAnswer:"


def check_context(context: str, mode: str, curriculum_steps: int = 0) -> None:
    """Refuses an unknown context, and "reference" whenever a step can be in `soft_plus_text` mode."""
    if context not in CONTEXTS:
        raise ValueError(f"translator.train_context must be one of {CONTEXTS}, got {context!r}.")
    if context == "reference" and (mode == "soft_plus_text" or curriculum_steps > 0):
        raise ValueError("translator.train_context='reference' gives the target no text, so it only fits soft_only "
                         "without a curriculum; use train_context='mode' for soft_plus_text.")


def context_text(mode: str, prompt: str, context: str = "mode") -> tuple[str, bool]:
    """(text, add_special_tokens) the target reads after the soft tokens in `mode` under `context`: the prompt
    plus the format line, or BOS plus the format line ("mode"); nothing, ("", False), under "reference"."""
    mode_at_step(1, mode, 0)  # validates the mode
    check_context(context, mode)
    if context == "reference":
        return "", False
    if mode == "soft_plus_text":
        return prompt + FORMAT_LINE, True
    return FORMAT_LINE, True


def target_context_ids(tokenizer: Any, mode: str, prompt: str, context: str = "mode") -> list[int]:
    """The target token ids between the K soft tokens and the solution (training) or generation (evaluation):
    the one definition both stages use."""
    text, special = context_text(mode, prompt, context)
    return token_ids(tokenizer, text, special) if text or special else []


def format_token_id(tokenizer: Any) -> int:
    """The target token that starts '####' where solutions have it (after a newline): the first token of
    "x\n#### 1" past its common prefix with "x\n" (so a SentencePiece prefix-space piece is not taken)."""
    full, head = token_ids(tokenizer, "x\n#### 1", False), token_ids(tokenizer, "x\n", False)
    i = 0
    while i < min(len(full), len(head)) and full[i] == head[i]:
        i += 1
    rest = full[i:]
    hashes = [t for t in rest if "#" in tokenizer.decode([t])]
    return int(hashes[0] if hashes else rest[0])


def gsm8k_examples(rows: Sequence[dict]) -> list[dict]:
    return [{"id": i, "question": r["question"], "answer": r["answer"]} for i, r in enumerate(rows)]


@dataclasses.dataclass
class Encode(grain.transforms.MapWithIndex):
    """A GSM8K row -> unpadded translator arrays; the element's step picks the mode (curriculum)."""

    sender_tokenizer: Any
    receiver_tokenizer: Any
    num_tokens: int
    batch_size: int
    mode: str = "soft_plus_text"
    curriculum_steps: int = 0
    context: str = "mode"  # see `context_text`
    teacher: str = "answer"
    sender_max_tokens: int = 512

    def __post_init__(self):
        check_context(self.context, self.mode, self.curriculum_steps)
        if self.teacher not in TEACHERS:
            raise ValueError(f"translator.teacher must be one of {TEACHERS}, got {self.teacher!r}.")
        mode_at_step(1, self.mode, self.curriculum_steps)  # validates the mode
        self.fill_id = self.receiver_tokenizer.pad_token_id or 0

    def map_with_index(self, index: int, row: dict) -> dict:
        step = index // self.batch_size + 1
        mode = mode_at_step(step, self.mode, self.curriculum_steps)
        prompt = TRAIN_PROMPT.format(question=row["question"])
        sender = token_ids(self.sender_tokenizer, prompt, True, self.sender_max_tokens)
        r = self.receiver_tokenizer
        ctx = target_context_ids(r, mode, prompt, self.context)
        solution = answer_ids(r, row["answer"], eos=True)
        receiver = [self.fill_id] * self.num_tokens + ctx + solution
        loss = np.zeros(len(receiver), np.int32)
        loss[self.num_tokens + len(ctx):] = 1
        prompt_ids = token_ids(r, prompt, False)
        teacher = token_ids(r, row["answer"] if self.teacher == "answer" else prompt, False)[: self.num_tokens]
        return {"sender_input_ids": np.asarray(sender, np.int32),
                "receiver_input_ids": np.asarray(receiver, np.int32), "receiver_loss_mask": loss,
                "prompt_input_ids": np.asarray(prompt_ids, np.int32),
                "teacher_input_ids": np.asarray(teacher, np.int32),
                "step": np.int32(step), "soft_only": np.int32(mode == "soft_only")}


class _TranslatorPadBatch(PadBatch):
    def __call__(self, examples: Sequence[dict]) -> dict:
        batch = super().__call__(examples)
        return {k: batch[k] for k in BATCH_KEYS}


def pad_batch(sender_pad_id: int, receiver_pad_id: int, num_tokens: int, sender_max_tokens: int,
              receiver_max_tokens: int, fixed: bool = False) -> PadBatch:
    """Sender left-padded, target rows right-padded to bucket lengths; prompt padded to >= K, teacher to K.
    `fixed`: every batch padded (or truncated) to the maximum lengths, so the jitted step compiles once (the
    prompt to max(sender_max_tokens, K))."""
    at_least_k = [n for n in buckets(RECEIVER_BUCKET, max(receiver_max_tokens, num_tokens)) if n >= num_tokens]
    sender_lengths = sender_max_tokens if fixed else buckets(SENDER_BUCKET, sender_max_tokens)
    receiver_lengths = receiver_max_tokens if fixed else buckets(RECEIVER_BUCKET, receiver_max_tokens)
    prompt_lengths = max(sender_max_tokens, num_tokens) if fixed else at_least_k
    return _TranslatorPadBatch(pad=[
        Pad(sender_lengths, pad_id=sender_pad_id, side="left", prefix="sender_"),
        Pad(receiver_lengths, pad_id=receiver_pad_id, side="right", prefix="receiver_"),
        Pad(prompt_lengths, pad_id=receiver_pad_id, side="right", prefix="prompt_"),
        Pad(num_tokens, pad_id=receiver_pad_id, side="right", prefix="teacher_")])


__all__ = ["BATCH_AXES", "BATCH_KEYS", "CONTEXTS", "Encode", "FORMAT_LINE", "MODES", "TEACHERS", "TRAIN_PROMPT",
           "check_context", "context_text", "eval_prompt", "few_shot_prefix", "format_token_id", "gsm8k_examples",
           "mode_at_step", "pad_batch", "rationale_and_answer", "target_context_ids"]
