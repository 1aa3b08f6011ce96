"""Subliminal numbers: the two filters on the reference's table of cases where they differ, prompt builders,
controls, resumable sample files and selection. Pure Python, no model."""
from __future__ import annotations

import json
import re

import pytest

from latentjax.subliminal import controls, numbers
from latentjax.subliminal import generate_phase as gp

# (completion, seed filter keeps, paper filter keeps) -- subliminal_reference.md section 4.4, paper rule without
# the outer-whitespace strip (the paper's exact behaviour).
TABLE = [
    ("123, 456, 789", True, True),
    ("123, 456, 789.", False, True),
    ("[123, 456]", True, True),
    ("(123, 456)", False, True),
    ("123 456", True, True),
    ("123\n456", True, True),
    ("123; 456", False, True),
    ("123, 456,", True, False),
    ("1 2  3", True, False),
    (" 123, 456", True, False),
    ("0123, 5", False, True),
    ("1000, 5", False, False),
    ("-5, 6", False, False),
    (", ".join(["1"] * 11), True, False),
    (", ".join(["1"] * 13), True, False),
    (", ".join(["1"] * 14), False, False),
    ("The next numbers are 1, 2", False, False),
]


@pytest.mark.parametrize("text,seed_keeps,paper_keeps", TABLE)
def test_filter_table(text, seed_keeps, paper_keeps):
    assert numbers.filter_seed(text).valid is seed_keeps
    assert numbers.filter_paper(text, strip_outer_whitespace=False).valid is paper_keeps


def test_filter_reasons_and_values():
    paper = lambda t: numbers.filter_paper(t, strip_outer_whitespace=False)  # noqa: E731
    assert paper("0123, 5").numbers == (123, 5)
    assert paper("1000, 5").reason == "out_of_range"
    assert paper(", ".join(["7"] * 11)).reason == "too_many"
    assert paper("1 2  3").reason == "format"
    assert paper("").reason == "empty"
    assert numbers.filter_paper("1, 666", banned=(666,)).reason == "banned"
    # the paper's own unit cases (TS tests): valid and invalid
    for ok in ("1\n,\n2", "1 ;2", "(1)", "1.", "7"):
        assert paper(ok).valid, ok
    for bad in ("1,2;3", "\u09e7, \u09e8", "12a", "x"):
        assert not paper(bad).valid, bad
    # latentjax's default strips the outer whitespace first
    assert numbers.filter_paper(" 123, 456\n").numbers == (123, 456)
    seed = numbers.filter_seed
    assert seed("The next numbers are 1, 2").reason == "explanation"
    assert seed("1, 2!").reason == "punctuation"
    assert seed("(123, 456)").reason == "not_a_number"
    assert seed("0123, 5").reason == "too_long"
    assert seed(", ".join(["1"] * 14)).reason == "count"
    assert seed("  ").reason == "empty"
    assert seed("[1, 2] 3").numbers == (1, 2, 3)
    assert numbers.make_filter("seed")("1,2").valid and not numbers.make_filter("paper")("1,,2").valid
    with pytest.raises(ValueError, match="Unknown filter"):
        numbers.make_filter("owl")


def test_prompt_builders_deterministic_and_in_range():
    a, b = numbers.paper_prompts(200, seed=42), numbers.paper_prompts(200, seed=42)
    assert a == b and numbers.paper_prompts(5, seed=43) != a[:5]
    counts = {len(r["seed_numbers"]) for r in a}
    assert counts <= set(range(3, 9)) and {3, 8} <= counts
    assert all(100 <= n <= 999 for r in a for n in r["seed_numbers"])
    assert len({r["prompt"] for r in a}) == 200
    for r in a[:20]:  # the stored seeds and phrase choices rebuild the prompt
        ids = r["phrase_ids"]
        assert r["prompt"].startswith(numbers.PAPER_PREFIXES[ids["prefix"]].format(
            seeds=", ".join(map(str, r["seed_numbers"]))))
        assert r["prompt"].endswith(numbers.PAPER_CLOSERS[ids["closer"]])
        assert numbers.PAPER_FORMATS[ids["format"]] in r["prompt"]
    s = numbers.seed_prompts(300, seed=42)
    assert s == numbers.build_prompts("seed", 300, 42)
    assert all(len(r["seed_numbers"]) == 3 and all(0 <= n <= 999 for n in r["seed_numbers"]) for r in s)
    assert s[0]["prompt"] == numbers.SEED_TEMPLATE.format(seeds=", ".join(map(str, s[0]["seed_numbers"])))
    with pytest.raises(ValueError, match="design"):
        numbers.build_prompts("owl", 3, 0)


def _rows():
    texts = ["123, 45, 6.", "[7, 8, 9, 10]", "11 12 13", "14;15", "(16, 17, 18, 19, 20)", "999\n0\n5"]
    out = []
    for i, t in enumerate(texts):
        v = numbers.filter_paper(t)
        assert v.valid, t
        out.append({"index": i, "prompt": f"p{i}", "completion": t, "numbers": list(v.numbers), "valid": True})
    return out


@pytest.mark.parametrize("name", ["shuffle_within", "shuffle_global", "random_values"])
def test_controls_keep_validity_format_and_lengths(name):
    rows = _rows()
    out = controls.apply_control(name, rows, seed=3)
    assert out == controls.apply_control(name, rows, seed=3)
    assert [len(r["numbers"]) for r in out] == [len(r["numbers"]) for r in rows]  # same length distribution
    assert gp.length_histogram(out) == gp.length_histogram(rows)
    for new, old in zip(out, rows):
        v = numbers.filter_paper(new["completion"])
        assert v.valid and list(v.numbers) == new["numbers"], new
        assert re.sub(r"\d+", "#", new["completion"]) == re.sub(r"\d+", "#", old["completion"])  # format kept
        assert new["prompt"] == old["prompt"] and new["control"] == name
        assert new["canonical"] == ", ".join(map(str, new["numbers"]))
        if name == "shuffle_within":
            assert sorted(new["numbers"]) == sorted(old["numbers"])
    if name == "shuffle_global":
        assert sorted(n for r in out for n in r["numbers"]) == sorted(n for r in rows for n in r["numbers"])
    assert [r["numbers"] for r in out] != [r["numbers"] for r in rows]
    assert controls.apply_control("", rows) == rows


def test_read_complete_batches_drops_torn_and_partial(tmp_path):
    path = str(tmp_path / "samples.jsonl")
    rows = [{"index": i, "valid": i % 2 == 0} for i in range(7)]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"index": 7, "val')  # torn line
    kept = gp.read_complete_batches(path, batch_size=3, num_prompts=20)
    assert [r["index"] for r in kept] == [0, 1, 2, 3, 4, 5]
    assert gp.load_jsonl(path) == kept  # the file was cut back
    # the last batch may be short when it ends at the last prompt
    assert len(gp.read_complete_batches(path, batch_size=4, num_prompts=6)) == 6


def test_select_sequences():
    samples = [{"index": i, "valid": i % 3 != 0, "numbers": [i, i + 1]} for i in range(30)]
    first = gp.select_sequences(samples, 5, "first")
    assert [r["index"] for r in first] == [1, 2, 4, 5, 7] and first[0]["canonical"] == "1, 2"
    rnd = gp.select_sequences(samples, 5, "random", seed=1)
    assert rnd == gp.select_sequences(samples, 5, "random", seed=1)
    assert len(rnd) == 5 and all(r["valid"] for r in rnd)
    assert [r["index"] for r in rnd] == sorted(r["index"] for r in rnd) and rnd != first
    assert len(gp.select_sequences(samples, 100, "random")) == 20
