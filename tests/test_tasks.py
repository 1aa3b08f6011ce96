"""Bridge tasks: the exact sender prompts, primers and answers of the spec on real rows of shared/data, the scoring
rules, evaluation subsets, and passkey generation (deterministic by seed)."""
from __future__ import annotations

import dataclasses
import json
import os
import random

import pytest

from latentjax.tasks import AG_NEWS, SST2, PasskeyTask, get_task, names, select


def test_registry():
    assert names() == ["ag_news", "banking77", "passkey", "sst2", "synthetic"]
    with pytest.raises(KeyError, match="known: ag_news"):
        get_task("trec")


def test_sst2_examples_on_real_rows(data_dir):
    ex = SST2.examples("validation", data_dir)
    assert len(ex) == 872
    assert ex[0] == {"id": 0, "sender_text": "Review: it 's a charming and often affecting journey . \n"
                     "Sentiment (positive or negative):", "answer": " positive", "label": 1, "gold": "positive"}
    assert ex[1]["answer"] == " negative" and ex[1]["sender_text"].startswith("Review: unflinchingly bleak")
    assert SST2.primer == "Sentiment:" and SST2.answer_eos and SST2.sender_max_tokens == 128
    assert sum(e["label"] for e in ex) == 444  # 444 positive / 428 negative


def test_ag_news_examples_on_real_rows(data_dir):
    ex = AG_NEWS.examples("test", data_dir)
    with open(os.path.join(data_dir, "ag_news", "test.jsonl")) as f:
        rows = [json.loads(next(f)) for _ in range(3)]
    assert ex[1]["sender_text"] == ("Article: " + rows[1]["text"][:256] +
                                    "\nTopic (world, sports, business, or science):")
    assert len(rows[1]["text"]) > 256  # the cut matters for this row
    assert ex[0]["answer"] == " business" and ex[1]["answer"] == " science"
    assert AG_NEWS.primer == "Topic:" and AG_NEWS.labels == ("world", "sports", "business", "science")
    first200 = [e["label"] for e in ex[:200]]
    assert [first200.count(c) for c in range(4)] == [61, 53, 29, 57]  # telepathy_reference.md §3.2


def test_banking77_examples_on_real_rows(data_dir):
    task = get_task("banking77", data_dir=data_dir)
    with open(os.path.join(data_dir, "banking77", "labels.json")) as f:
        labels = json.load(f)
    assert task.labels == tuple(labels) and task.num_classes == 77
    assert task.labels[11] == "card_arrival" and task.labels[51] == "Refund_not_showing_up"
    ex = task.examples("test", data_dir)
    assert len(ex) == 3080
    assert ex[0] == {"id": 0, "sender_text": "How do I locate my card?", "answer": "card_arrival", "label": 11,
                     "gold": "card_arrival"}
    assert task.primer == "Intent: " and not task.answer_eos and task.max_new_tokens == 20
    # The reference's 200-row slice holds 5 intents; a stratified sample covers them all.
    assert len({e["label"] for e in select(ex, 200, "first")}) == 5
    strat = select(ex, 154, "stratified", seed=3)
    assert len(strat) == 154 and all([e["label"] for e in strat].count(c) == 2 for c in range(77))
    assert strat == select(ex, 154, "stratified", seed=3)


def test_classification_scoring_rules():
    assert SST2.score("Positive!", {"label": 1}) == {"correct": True, "prediction": 1}
    assert SST2.score(" negative review", {"label": 1}) == {"correct": False, "prediction": 0}
    assert SST2.score("neutral", {"label": 0}) == {"correct": False, "prediction": -1}
    assert AG_NEWS.score("Sci/Tech news", {"label": 3})["correct"]
    assert AG_NEWS.score("technology", {"label": 3}) == {"correct": True, "prediction": 3}
    assert not AG_NEWS.score("technology", {"label": 2})["correct"]
    task = dataclasses.replace(AG_NEWS, labels=("card_arrival", "card_linking"), aliases=())  # Banking77's rule
    assert task.score("card arrival", {"label": 0}) == {"correct": True, "prediction": 0}
    assert task.score("It is CARD_LINKING.", {"label": 1})["correct"]


def test_passkey_is_deterministic_by_seed_and_matches_the_reference_codes():
    task = PasskeyTask()
    test = task.examples("test")
    rng = random.Random(42)  # the reference re-seeds Python's RNG with 42 before every evaluation
    assert [e["gold"] for e in test] == [str(rng.randint(10000, 99999)) for _ in range(100)]
    assert test[0]["sender_text"] == f"The secret access code is {test[0]['gold']}. Remember it."
    assert test[0]["answer"] == test[0]["gold"] and task.primer == "The code is " and not task.answer_eos
    assert task.examples("test") == test and len(task.examples("train")) == 16000
    other = PasskeyTask(train_seed=1).examples("train")
    assert [e["gold"] for e in other[:20]] != [e["gold"] for e in task.examples("train")[:20]]
    assert all(10000 <= int(e["gold"]) <= 99999 for e in other)
    assert PasskeyTask(train_seed=1).examples("train") == other


def test_passkey_haystack():
    task = PasskeyTask(haystack_sentences=40, eval_size=5)
    ex = task.examples("test")
    plain = PasskeyTask(eval_size=5).examples("test")
    assert [e["gold"] for e in ex] == [e["gold"] for e in plain]  # codes do not depend on the haystack
    for e in ex:
        needle = f"The secret access code is {e['gold']}. Remember it."
        assert needle in e["sender_text"] and e["sender_text"].count(".") == 40 + 2  # 40 fillers + the needle's two
    assert ex == task.examples("test")
    start = PasskeyTask(haystack_sentences=10, needle_depth=0.0).sender_prompt(12345)
    end = PasskeyTask(haystack_sentences=10, needle_depth=1.0).sender_prompt(12345)
    assert start.startswith("The secret access code is 12345.") and end.endswith("Remember it.")


def test_passkey_scoring():
    task = PasskeyTask()
    ex = {"gold": "93810"}
    assert task.score("93810", ex)["exact"] and task.score("code: 9-3-8-1-0", ex)["exact"]
    s = task.score("899991188", ex)  # a typical reference output
    assert not s["exact"] and s["digit_accuracy"] == pytest.approx(0.0)
    assert task.score("93999", ex)["digit_accuracy"] == pytest.approx(0.4)
    assert task.score("", ex)["digit_accuracy"] == 0.0


def test_select_modes():
    ex = [{"label": i % 3, "id": i} for i in range(30)]
    assert select(ex, 5, "first") == ex[:5]
    assert select(ex, None) == ex and select(ex, 100, "random") == ex
    r = select(ex, 7, "random", seed=1)
    assert len(r) == 7 and r == select(ex, 7, "random", seed=1) and r != select(ex, 7, "random", seed=2)
    s = select(ex, 7, "stratified", seed=0)
    assert sorted([e["label"] for e in s]) == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        select(ex, 3, "bogus")
