"""Task examples -> bridge batches: the sender prompt left-padded, the receiver row
`[primer] + [K soft-token slots] + [answer (+ EOS)]` right-padded with a loss mask on the answer.

Keys (after `pad_batch`): sender_input_ids / sender_attention_mask [B, Ts]; receiver_input_ids /
receiver_attention_mask / receiver_loss_mask [B, Tr]; soft_start [B]. Padding goes to bucket lengths (multiples of
`SENDER_BUCKET` / `RECEIVER_BUCKET`) so jit sees few shapes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import grain
import numpy as np

from latentjax.data.transforms import Pad, PadBatch

SENDER_BUCKET = 32
RECEIVER_BUCKET = 8
BATCH_KEYS = ("sender_input_ids", "sender_attention_mask", "receiver_input_ids", "receiver_attention_mask",
              "receiver_loss_mask", "soft_start")
BATCH_AXES = {"sender_input_ids": ("batch", "length"), "sender_attention_mask": ("batch", "length"),
              "receiver_input_ids": ("batch", "length"), "receiver_attention_mask": ("batch", "length"),
              "receiver_loss_mask": ("batch", "length"), "soft_start": ("batch",)}


def token_ids(tokenizer: Any, text: str, add_special_tokens: bool, max_length: Optional[int] = None) -> list[int]:
    # Truncate here, not with the tokenizer's truncation=True: that mutates the shared fast tokenizer's backend
    # state, and grain's prefetch threads encode with one tokenizer at once (sender and receiver can be the same
    # object), so one thread's max_length leaked into another's encode.
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    if max_length and len(ids) > max_length:
        ids = ids[-max_length:] if getattr(tokenizer, "truncation_side", "right") == "left" else ids[:max_length]
    return ids


def answer_ids(tokenizer: Any, answer: str, eos: bool) -> list[int]:
    """The answer as the reference tokenises it: no special tokens, EOS appended when the task asks for it."""
    return token_ids(tokenizer, answer, False) + ([tokenizer.eos_token_id] if eos else [])


@dataclasses.dataclass
class EncodeExample(grain.transforms.Map):
    """A task example -> unpadded sender ids, receiver ids with K placeholder slots, loss mask, soft_start."""

    sender_tokenizer: Any
    receiver_tokenizer: Any
    primer: str
    num_soft: int
    sender_max_tokens: int
    answer_eos: bool
    with_answer: bool = True

    def __post_init__(self):
        self.primer_ids = token_ids(self.receiver_tokenizer, self.primer, False)
        self.fill_id = self.receiver_tokenizer.pad_token_id or 0

    def map(self, ex: dict) -> dict:
        sender = token_ids(self.sender_tokenizer, ex["sender_text"], True, self.sender_max_tokens)
        answer = answer_ids(self.receiver_tokenizer, ex["answer"], self.answer_eos) if self.with_answer else []
        prefix = len(self.primer_ids) + self.num_soft
        receiver = self.primer_ids + [self.fill_id] * self.num_soft + answer
        loss = np.zeros(len(receiver), np.int32)
        loss[prefix:] = 1
        return {"sender_input_ids": np.asarray(sender, np.int32), "receiver_input_ids": np.asarray(receiver, np.int32),
                "receiver_loss_mask": loss, "soft_start": np.int32(len(self.primer_ids))}


def buckets(step: int, longest: int) -> list[int]:
    return list(range(step, -(-longest // step) * step + 1, step))


def pad_batch(sender_pad_id: int, receiver_pad_id: int, sender_max_tokens: int, receiver_max_tokens: int = 4096,
              batch_size: Optional[int] = None) -> PadBatch:
    """The batch_fn: sender left-padded, receiver right-padded, both to bucket lengths; drops the loss mask of the
    sender. With `batch_size`, short batches are completed with empty rows (all masks 0)."""
    return _BridgePadBatch(pad=[
        Pad(buckets(SENDER_BUCKET, sender_max_tokens), pad_id=sender_pad_id, side="left", prefix="sender_"),
        Pad(buckets(RECEIVER_BUCKET, receiver_max_tokens), pad_id=receiver_pad_id, side="right",
            prefix="receiver_")], batch_size=batch_size)


class _BridgePadBatch(PadBatch):
    def __call__(self, examples: Sequence[dict]) -> dict:
        batch = super().__call__(examples)
        return {k: batch[k] for k in BATCH_KEYS}


def collate(encoder: EncodeExample, examples: Sequence[dict], batch_fn: PadBatch) -> dict:
    """Encode and pad a list of examples into one batch (evaluation path; training goes through grain)."""
    return batch_fn([encoder.map(ex) for ex in examples])
