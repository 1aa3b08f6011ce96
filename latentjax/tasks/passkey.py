"""Passkey retrieval: the sender reads a sentence holding a 5-digit code, the receiver must say the code.

Seed-faithful setting (telepathy_reference.md §5): one sentence, no haystack; codes uniform in [10000, 99999];
evaluation codes are Python's `random.seed(42)` stream of `randint(10000, 99999)` (the reference re-seeds before
every evaluation, so every eval sees the same codes). Our extension: `haystack_sentences` filler sentences around
the code sentence, at `needle_depth` (a fraction of the filler; None = a seeded random depth per example).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional

from latentjax.eval.classification import passkey_score

FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
CODE_LOW, CODE_HIGH = 10000, 99999


@dataclasses.dataclass(frozen=True)
class PasskeyTask:
    name: str = "passkey"
    primer: str = "The code is "
    needle: str = "The secret access code is {code}. Remember it."
    answer_prefix: str = ""
    answer_eos: bool = False
    sender_max_tokens: int = 8192
    haystack_sentences: int = 0
    needle_depth: Optional[float] = None
    train_size: int = 16000  # the reference generates steps x batch x 2 codes once
    train_seed: int = 0
    eval_seed: int = 42
    eval_size: int = 100
    max_new_tokens: int = 10
    metric: str = "passkey"
    labels: tuple = ()
    num_classes: int = 0
    train_split: str = "train"
    eval_split: str = "test"

    def sender_prompt(self, code: int, depth_rng: Optional[random.Random] = None) -> str:
        needle = self.needle.format(code=code)
        if self.haystack_sentences <= 0:
            return needle
        filler = [FILLER[i % len(FILLER)] for i in range(self.haystack_sentences)]
        depth = self.needle_depth if self.needle_depth is not None else (depth_rng or random.Random(0)).random()
        at = round(min(max(depth, 0.0), 1.0) * len(filler))
        return " ".join(filler[:at] + [needle] + filler[at:])

    def codes(self, split: str) -> list[int]:
        """The split's codes: `random.Random(seed).randint(10000, 99999)` drawn size times."""
        seed, size = (self.train_seed, self.train_size) if split == self.train_split else (self.eval_seed,
                                                                                         self.eval_size)
        if split not in (self.train_split, self.eval_split):
            raise KeyError(f"passkey has splits {self.train_split!r} and {self.eval_split!r}, not {split!r}.")
        rng = random.Random(seed)
        return [rng.randint(CODE_LOW, CODE_HIGH) for _ in range(size)]

    def examples(self, split: str, data_dir: Optional[str] = None) -> list[dict]:
        del data_dir
        seed = self.train_seed if split == self.train_split else self.eval_seed
        depth_rng = random.Random(seed + 1_000_003)  # separate stream: the codes do not depend on the haystack
        return [{"id": i, "sender_text": self.sender_prompt(code, depth_rng), "answer": f"{self.answer_prefix}{code}",
                 "label": -1, "gold": str(code)} for i, code in enumerate(self.codes(split))]

    def score(self, output: str, example: dict) -> dict:
        """The reference rule: exact iff the code is in the output or the output's digits equal it; digit accuracy
        over the code's positions."""
        exact, right = passkey_score(output, example["gold"])
        digits = "".join(ch for ch in output if ch.isdigit())
        return {"correct": bool(exact), "exact": bool(exact), "digit_accuracy": right / len(example["gold"]),
                "prediction": digits}
