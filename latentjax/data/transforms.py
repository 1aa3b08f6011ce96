"""Tokenization and padding transforms for `make_loader` (grain `MapTransform`s, picklable for worker processes).

Per example:
  Tokenize                  text field -> `input_ids` (int32, unpadded)
  TokenizePromptCompletion  prompt (+ completion) -> `input_ids`, `loss_mask` (1 on completion tokens only),
                            plain or through the tokenizer's chat template
  Pad                       -> `input_ids`, `attention_mask`, `loss_mask` of a fixed length, or of the smallest of
                            several bucket lengths that holds the example; left or right padding
Per batch (`make_loader(..., batch_fn=PadBatch(...))`):
  PadBatch                  pads every example of a batch to the smallest bucket holding the batch's longest, then
                            stacks; optionally pads the batch itself to a fixed size with empty rows (eval)

Every output key is prefixed with `prefix`, so one example can carry several sequences (e.g. the bridge's
`sender_input_ids` and `receiver_input_ids`, each tokenized and padded by its own tokenizer and pad settings).
Grain 0.2.18 has no length-bucketed batching (grouping similar lengths into one batch); `PadBatch` pads per batch
to bucket lengths instead, which bounds the number of distinct shapes jit sees.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Optional, Sequence, Union

import grain
import numpy as np

_SIDES = ("left", "right")


def _ids(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


@dataclasses.dataclass
class Tokenize(grain.transforms.Map):
    """`ex[field]` (a string) -> `ex[prefix + "input_ids"]`; other fields are kept."""

    tokenizer: Any
    field: str = "text"
    prefix: str = ""
    add_special_tokens: bool = True   # e.g. BOS, as the tokenizer defines
    add_eos: bool = False

    def map(self, ex: dict) -> dict:
        ids = _ids(self.tokenizer, ex[self.field], self.add_special_tokens)
        if self.add_eos:
            ids.append(self.tokenizer.eos_token_id)
        return {**ex, self.prefix + "input_ids": np.asarray(ids, np.int32)}


@dataclasses.dataclass
class TokenizePromptCompletion(grain.transforms.Map):
    """Prompt (+ completion) -> `input_ids` and `loss_mask` (1 on completion tokens, 0 on the prompt).

    Plain: tokenizer(prompt) (with special tokens, e.g. BOS) + tokenizer(completion) (without) + EOS if `add_eos`.
    Chat (`chat_template=True`): the prompt is rendered with `add_generation_prompt=True` and the full
    conversation with the completion as the assistant turn; the completion tokens are those of the text the
    full rendering adds (its end-of-turn tokens included). The prompt field may be a string (one user turn) or a
    list of messages; `system` adds a system turn; `chat_kwargs` go to `apply_chat_template`.
    With `completion_field=None` only the prompt is tokenized (generation inputs), `loss_mask` all 0.
    """

    tokenizer: Any
    prompt_field: str = "prompt"
    completion_field: Optional[str] = "completion"
    prefix: str = ""
    chat_template: bool = False
    system: Optional[str] = None
    add_eos: bool = True             # plain mode only; chat templates close the turn themselves
    chat_kwargs: dict = dataclasses.field(default_factory=dict)

    def _texts(self, prompt: Union[str, list], completion: Optional[str]) -> tuple[str, Optional[str]]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.system is not None:
            messages = [{"role": "system", "content": self.system}] + messages
        render = lambda m, gen: self.tokenizer.apply_chat_template(  # noqa: E731
            m, tokenize=False, add_generation_prompt=gen, **self.chat_kwargs)
        prompt_text = render(messages, True)
        if completion is None:
            return prompt_text, None
        full = render(messages + [{"role": "assistant", "content": completion}], False)
        if not full.startswith(prompt_text):
            raise ValueError("The chat template renders the conversation with a different prefix than the "
                             f"generation prompt, so the completion cannot be located:\n{prompt_text!r}\n{full!r}")
        return prompt_text, full[len(prompt_text):]

    def map(self, ex: dict) -> dict:
        prompt = ex[self.prompt_field]
        completion = None if self.completion_field is None else ex[self.completion_field]
        if self.chat_template:  # rendered text carries its own special tokens
            prompt_text, completion_text = self._texts(prompt, completion)
            prompt_ids = _ids(self.tokenizer, prompt_text, False)
            completion_ids = [] if completion_text is None else _ids(self.tokenizer, completion_text, False)
        else:
            prompt_ids = _ids(self.tokenizer, prompt, True)
            completion_ids = [] if completion is None else _ids(self.tokenizer, completion, False)
            if completion is not None and self.add_eos:
                completion_ids.append(self.tokenizer.eos_token_id)
        ids = np.asarray(prompt_ids + completion_ids, np.int32)
        mask = np.zeros(len(ids), np.int32)
        mask[len(prompt_ids):] = 1
        return {**ex, self.prefix + "input_ids": ids, self.prefix + "loss_mask": mask}


@dataclasses.dataclass
class Pad(grain.transforms.Map):
    """Pad/truncate `input_ids` (and `loss_mask`) and add `attention_mask`, all int32 of one length.

    `lengths`: one fixed length, or bucket lengths: an example gets the smallest bucket that holds it, and one
    longer than the largest is truncated to it (from the `truncation` side). Padding goes on `side` ("left" for
    generation prompts). `input_ids` are padded with `pad_id`, masks with 0; a missing `loss_mask` is taken as
    all ones (loss on every real token).
    """

    lengths: Union[int, Sequence[int]]
    pad_id: int = 0
    side: str = "right"
    truncation: str = "right"
    prefix: str = ""

    def __post_init__(self):
        self.lengths = sorted({self.lengths} if isinstance(self.lengths, int) else set(self.lengths))
        if not self.lengths or self.lengths[0] <= 0:
            raise ValueError(f"lengths must be positive, got {self.lengths}")
        if self.side not in _SIDES or self.truncation not in _SIDES:
            raise ValueError(f"side and truncation must be 'left' or 'right', got {self.side!r}, {self.truncation!r}")

    def target(self, n: int) -> int:
        """The smallest bucket length >= n, or the largest one."""
        return self.lengths[min(bisect.bisect_left(self.lengths, n), len(self.lengths) - 1)]

    def pad(self, ex: dict, length: int) -> dict:
        p = self.prefix
        ids = np.asarray(ex[p + "input_ids"], np.int32)
        loss = np.asarray(ex.get(p + "loss_mask", np.ones(len(ids))), np.int32)
        if len(ids) > length:
            cut = slice(len(ids) - length, None) if self.truncation == "left" else slice(0, length)
            ids, loss = ids[cut], loss[cut]
        width = (length - len(ids), 0) if self.side == "left" else (0, length - len(ids))
        return {**ex, p + "input_ids": np.pad(ids, width, constant_values=self.pad_id),
                p + "attention_mask": np.pad(np.ones(len(ids), np.int32), width),
                p + "loss_mask": np.pad(loss, width)}

    def map(self, ex: dict) -> dict:
        return self.pad(ex, self.target(len(ex[self.prefix + "input_ids"])))


@dataclasses.dataclass
class PadBatch:
    """A `batch_fn`: pad each example to the smallest bucket of `pad` holding the batch's longest sequence, stack.

    `pad` may be a list of `Pad`s (one per prefix). With `batch_size`, a short batch is completed with rows of
    zeros (attention_mask and loss_mask 0) by `grain.experimental.batch_and_pad`, so eval batches keep one shape.
    """

    pad: Union[Pad, Sequence[Pad]]
    batch_size: Optional[int] = None

    def __call__(self, examples: Sequence[dict]) -> dict:
        for pad in [self.pad] if isinstance(self.pad, Pad) else self.pad:
            length = pad.target(max(len(ex[pad.prefix + "input_ids"]) for ex in examples))
            examples = [pad.pad(ex, length) for ex in examples]
        return grain.experimental.batch_and_pad(examples, batch_size=self.batch_size or len(examples))


__all__ = ["Pad", "PadBatch", "Tokenize", "TokenizePromptCompletion"]
