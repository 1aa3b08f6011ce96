"""What a bridge task is: where its rows come from, what the sender reads, what the receiver is primed with and
must answer, and how a generated answer is scored.

Every task turns its rows into *examples*, plain dicts with the same keys:
  id           row index in its split (or the generated sample's index)
  sender_text  the sender's prompt (no chat template)
  answer       the receiver's target text, without the EOS token (`Task.answer_eos` adds it)
  label        class id (-1 where there are no classes, e.g. passkey)
  gold         the gold label word or code, for reports
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from latentjax.eval.classification import label_aliases, label_in_output, parse_label


def load_rows(dataset: str, split: str, data_dir: Optional[str] = None):
    """A split through the data helper's `load_split` (local JSONL under shared/data first, else the hub)."""
    from latentjax.data.sources import load_split

    return load_split(dataset, split, data_dir)


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """A text-classification task scored by label words (SST-2, AG News, Banking77)."""

    name: str
    dataset: str
    train_split: str
    eval_split: str
    sender_template: str  # str.format template with {text}
    primer: str
    labels: tuple  # label words, in label-id order
    text_field: str = "text"
    label_field: str = "label"
    sender_max_chars: Optional[int] = None  # cut the text before formatting (AG News: 256)
    sender_max_tokens: int = 256
    answer_prefix: str = " "  # the answer is answer_prefix + label word (+ EOS when answer_eos)
    answer_eos: bool = True
    aliases: tuple = ()  # ((label_id, (alias, ...)), ...): extra strings that count as that label in outputs
    max_new_tokens: int = 5
    metric: str = "label_match"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def sender_prompt(self, text: str) -> str:
        if self.sender_max_chars is not None:
            text = text[: self.sender_max_chars]
        return self.sender_template.format(text=text)

    def answer_text(self, label: int) -> str:
        return self.answer_prefix + self.labels[label]

    def example(self, row: dict, index: int) -> dict:
        label = int(row[self.label_field])
        return {"id": index, "sender_text": self.sender_prompt(row[self.text_field]),
                "answer": self.answer_text(label), "label": label, "gold": self.labels[label]}

    def examples(self, split: str, data_dir: Optional[str] = None) -> list[dict]:
        rows = load_rows(self.dataset, split, data_dir)
        return [self.example(row, i) for i, row in enumerate(rows)]

    def alias_sets(self) -> list[tuple]:
        """Per label, the lower-cased strings that count as it in an output (eval.classification's rule: the word,
        its `_`-as-space form, and the task's extra aliases)."""
        extra = {self.labels[lab]: tuple(words) for lab, words in self.aliases}
        return [label_aliases(label, extra) for label in self.labels]

    def score(self, output: str, example: dict) -> dict:
        """The reference rule (correct iff a gold alias is a substring of the lower-cased output) and the parsed
        prediction (the label named earliest; -1 if none)."""
        sets = self.alias_sets()
        pred = parse_label(output, sets)
        return {"correct": bool(label_in_output(output, sets[example["label"]])),
                "prediction": -1 if pred is None else pred}


def select(examples: Sequence[dict], num: Optional[int], mode: str = "first", seed: int = 0) -> list[dict]:
    """Evaluation subset: `first` N rows (the reference), a seeded `stratified` sample of N (equal share per label,
    remainder to the lowest label ids), a seeded `random` sample, or `all` (also when num is None or >= len)."""
    examples = list(examples)
    if num is None or mode == "all" or num >= len(examples):
        return examples
    if mode == "first":
        return examples[:num]
    rng = np.random.default_rng(seed)
    if mode == "random":
        idx = np.sort(rng.choice(len(examples), num, replace=False))
        return [examples[i] for i in idx]
    if mode == "stratified":
        by_label: dict[int, list[int]] = {}
        for i, ex in enumerate(examples):
            by_label.setdefault(ex["label"], []).append(i)
        labels = sorted(by_label)
        share = {lab: num // len(labels) + (j < num % len(labels)) for j, lab in enumerate(labels)}
        picked = []
        for lab in labels:
            pool = by_label[lab]
            picked.extend(rng.choice(pool, min(share[lab], len(pool)), replace=False).tolist())
        return [examples[i] for i in sorted(picked)]
    raise ValueError(f"Unknown eval subset mode {mode!r}; use first, stratified, random or all.")
