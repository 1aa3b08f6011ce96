"""Run-directory outputs of latentjax.eval.reports: written, re-read, and plots present."""
import json
import os

import numpy as np
import pytest

from latentjax.eval import reports
from latentjax.eval.stats import accuracy_summary, wilson_interval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_and_reread_eval_outputs(tmp_path):
    examples = [
        {"index": 0, "input": "Review: good", "gold": "positive", "output": " positive", "prediction": 1,
         "correct": np.bool_(True), "logprob": np.float32(-0.25)},
        {"index": 1, "input": "Review: ünïcode", "gold": "negative", "output": "", "prediction": None,
         "correct": False, "logprob": float("nan")},
    ]
    summary = {"accuracy": accuracy_summary([1, 0]), "confusion": np.array([[1, 0], [0, 0]]),
               "config": {"tokens": 8, "layers": (31,)}}
    jsonl, summary_path = reports.write_eval_outputs(tmp_path / "run", "sst2_bridge", examples, summary)
    assert jsonl.endswith("sst2_bridge.jsonl") and summary_path.endswith("sst2_bridge.summary.json")
    back = reports.read_jsonl(jsonl)
    assert len(back) == 2
    assert back[0]["correct"] is True and back[0]["logprob"] == pytest.approx(-0.25)
    assert back[1]["logprob"] is None and back[1]["prediction"] is None
    assert back[1]["input"] == "Review: ünïcode"
    s = reports.read_json(summary_path)
    assert s["accuracy"]["correct"] == 1 and s["accuracy"]["n"] == 2
    assert s["confusion"] == [[1, 0], [0, 0]] and s["config"]["layers"] == [31]
    assert sorted(os.listdir(tmp_path / "run")) == ["sst2_bridge.jsonl", "sst2_bridge.summary.json"]  # no tmp left
    with open(summary_path) as f:
        json.loads(f.read())  # strict JSON (no NaN)


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "a.json"
    reports.write_json(path, {"v": 1})
    reports.write_json(path, {"v": 2})
    assert reports.read_json(path) == {"v": 2}
    with pytest.raises(TypeError):
        reports.write_json(path, {"v": object()})
    assert reports.read_json(path) == {"v": 2}  # the failed write left the old file whole
    assert os.listdir(tmp_path) == ["a.json"]


def test_markdown_table_and_accuracy_cell():
    cell = reports.format_accuracy(9, 10)
    lo, hi = wilson_interval(9, 10)
    assert cell == f"90.0 [{100 * lo:.1f}, {100 * hi:.1f}]" == "90.0 [59.6, 98.2]"
    assert reports.format_accuracy(0, 0) == "n/a"
    rows = [{"model": "base", "MATH": cell, "p": 0.012345, "n": 10},
            {"model": "stu|dent", "MATH": "1.0", "p": float("nan")}]
    table = reports.markdown_table(rows)
    assert table.splitlines() == [
        "| model | MATH | p | n |",
        "|---|---|---|---|",
        "| base | 90.0 [59.6, 98.2] | 0.01235 | 10 |",
        "| stu\\|dent | 1.0 | nan |  |",
    ]
    assert reports.markdown_table(rows, columns=["n", "model"]).splitlines()[0] == "| n | model |"


def _assert_png(path):
    assert os.path.exists(path) and os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_plot_accuracy_vs_tokens(tmp_path):
    series = {"Banking77": [(16, 43, 200), (32, 27, 200), (64, 15, 200), (128, 2, 200)],
              "passkey digit": [(16, 117, 500), (128, 49, 500)]}
    _assert_png(reports.plot_accuracy_vs_tokens(series, tmp_path / "plots" / "tokens.png"))


def test_plot_benchmark_bars(tmp_path):
    results = {"MATH-500": {"base": (150, 500), "teacher": (200, 500), "student": (155, 500)},
               "GSM8K": {"base": (1000, 1319), "student": (990, 1319)},
               "MMLU-math": {"base": (500, 1064), "teacher": (520, 1064), "student": (505, 1064)}}
    _assert_png(reports.plot_benchmark_bars(results, tmp_path / "bars.png"))


def test_plotting_leaves_global_backend_alone():
    import matplotlib
    before = matplotlib.get_backend()
    reports._new_figure((1, 1))
    assert matplotlib.get_backend() == before
