"""Bridge tasks (telepathy.md "Training"/"Evaluation"): SST-2, AG News, Banking77 and passkey, plus a synthetic
sender-only task generated from a seed (the CPU learning proof).

`get_task("sst2")` returns a frozen task definition; keyword options replace its fields
(`get_task("passkey", haystack_sentences=200)`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from latentjax.eval.classification import AGNEWS_SCIENCE_ALIASES
from latentjax.tasks.base import ClassificationTask, load_rows, select
from latentjax.tasks.passkey import PasskeyTask
from latentjax.tasks.synthetic import SyntheticTask

Task = Union[ClassificationTask, PasskeyTask, SyntheticTask]

SST2 = ClassificationTask(
    name="sst2", dataset="sst2", train_split="train", eval_split="validation", text_field="sentence",
    sender_template="Review: {text}\nSentiment (positive or negative):", sender_max_tokens=128,
    primer="Sentiment:", labels=("negative", "positive"))

AG_NEWS = ClassificationTask(
    name="ag_news", dataset="ag_news", train_split="train", eval_split="test",
    sender_template="Article: {text}\nTopic (world, sports, business, or science):", sender_max_chars=256,
    sender_max_tokens=256, primer="Topic:", labels=("world", "sports", "business", "science"),
    aliases=((3, AGNEWS_SCIENCE_ALIASES),))


def banking77(data_dir: Optional[str] = None, **options: Any) -> ClassificationTask:
    """Banking77: the raw query, primer `Intent: `, the intent name (HF label order from labels.json) as answer
    with no leading space and no EOS (the reference's target text), 20 generated tokens."""
    from latentjax.data.sources import label_names

    names = tuple(label_names("banking77", data_dir))
    task = ClassificationTask(
        name="banking77", dataset="banking77", train_split="train", eval_split="test", sender_template="{text}",
        sender_max_tokens=256, primer="Intent: ", labels=names, answer_prefix="", answer_eos=False,
        max_new_tokens=20)
    return dataclasses.replace(task, **options) if options else task


_FACTORIES = {
    "sst2": lambda **kw: dataclasses.replace(SST2, **kw),
    "ag_news": lambda **kw: dataclasses.replace(AG_NEWS, **kw),
    "banking77": banking77,
    "passkey": lambda **kw: PasskeyTask(**kw),
    "synthetic": lambda **kw: SyntheticTask(**kw),
}


def names() -> list[str]:
    return sorted(_FACTORIES)


def get_task(name: str, **options: Any) -> Task:
    if name not in _FACTORIES:
        raise KeyError(f"Unknown bridge task {name!r}; known: {', '.join(names())}.")
    return _FACTORIES[name](**options)


__all__ = ["AG_NEWS", "SST2", "ClassificationTask", "PasskeyTask", "SyntheticTask", "Task", "banking77", "get_task",
           "load_rows", "names", "select"]
