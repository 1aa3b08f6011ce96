"""A synthetic classification task that only the sender can solve, generated from a seed (no download).

Each example's sender text is a few seeded filler words with the class's marker word at a random position; the
receiver sees only the constant primer, so without the bridge it cannot beat chance. Labels are balanced (shuffled
`i % num_classes`), answers are single letters (one byte token, no EOS), so label scoring reads one token. Used by
the CPU proof that a tiny random sender/receiver pair learns through the bridge (tests/test_bridge_synthetic.py)
and usable from any bridge config (`task.name = "synthetic"`).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional

from latentjax.tasks.base import ClassificationTask

MARKERS = ("north", "south", "east", "west", "up", "down", "left", "right")
FILLER = ("the", "grass", "sky", "note", "river", "stone", "paper", "cloud", "bread", "lamp", "road", "tree")
LETTERS = tuple("ABCDEFGH")


@dataclasses.dataclass(frozen=True)
class SyntheticTask(ClassificationTask):
    """Class c <-> marker word markers[c] in the sender text <-> answer labels[c]."""

    name: str = "synthetic"
    dataset: str = "synthetic"  # generated, never loaded
    train_split: str = "train"
    eval_split: str = "test"
    sender_template: str = "{text}"
    primer: str = "Label: "
    labels: tuple = LETTERS[:4]
    markers: tuple = MARKERS[:4]
    filler_words: int = 4  # filler words around the marker
    train_size: int = 2048
    eval_size: int = 64
    train_seed: int = 0
    eval_seed: int = 1
    sender_max_tokens: int = 64
    answer_prefix: str = ""
    answer_eos: bool = False
    max_new_tokens: int = 2

    def __post_init__(self):
        if len(self.markers) != len(self.labels):
            raise ValueError(f"synthetic task: {len(self.markers)} markers for {len(self.labels)} labels; give one "
                             "marker per label.")

    def sender_text(self, label: int, rng: random.Random) -> str:
        words = [rng.choice(FILLER) for _ in range(self.filler_words)]
        words.insert(rng.randint(0, len(words)), self.markers[label])
        return " ".join(words)

    def examples(self, split: str, data_dir: Optional[str] = None) -> list[dict]:
        """`size` examples of the split, balanced over labels, in a seeded order (same seed, same examples)."""
        del data_dir
        if split not in (self.train_split, self.eval_split):
            raise KeyError(f"synthetic has splits {self.train_split!r} and {self.eval_split!r}, not {split!r}.")
        seed, size = (self.train_seed, self.train_size) if split == self.train_split else (self.eval_seed,
                                                                                         self.eval_size)
        rng = random.Random(seed)
        labels = [i % self.num_classes for i in range(size)]
        rng.shuffle(labels)
        return [self.example({"text": self.sender_text(label, rng), "label": label}, i)
                for i, label in enumerate(labels)]
