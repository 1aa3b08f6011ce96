"""launch/gpu_subliminal_smollm2.py without running a model: the full scale's settings (the issue's reduced scale
adapted to one H100), the smoke scale's, and the few result files plus the printed table from a run folder."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from latentjax.eval import reports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("gpu_subliminal_smollm2",
                                                  os.path.join(ROOT, "launch", "gpu_subliminal_smollm2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_and_smoke_scales(driver):
    c = driver.build_config(driver.parse_args(["--out", "o", "--model", "/m", "--scale", "full"]))
    assert c.model.path == "/m" and c.model.dtype == "bfloat16" and c.protocol == "paper"
    assert c.teacher.num_examples == 2000 and tuple(c.teacher.levels) == (4, 5) and c.teacher.export == "best"
    assert c.teacher.train.batch_size == 32 and c.teacher.train.grad_accum == 4 and c.teacher.eval_every == 20
    assert c.generate.batch_size == 2048 and tuple(c.generate.screen) == (8, 24) and c.evaluate.batch_size == 64
    assert c.generate.target == 5000 and c.generate.select == "first" and c.generate.temperature == 1.0
    assert tuple(c.student.seeds) == (42, 43, 44) and c.student.epochs == 3.0
    assert c.teacher.optimizer.lr == c.student.optimizer.lr == 1e-5 and c.teacher.optimizer.warmup_steps == 100
    assert c.evaluate.num_examples == 500 and c.evaluate.math_dataset == "math500"
    assert tuple(c.evaluate.benchmarks) == ("math", "gsm8k", "mmlu_math") and len(c.evaluate.mmlu_subjects) == 4
    s = driver.build_config(driver.parse_args(["--out", "o", "--model", "/m", "--scale", "smoke"]))
    assert s.model.dtype == "float32" and s.teacher.steps == 2 and s.teacher.eval_every == 1
    assert tuple(s.student.seeds) == (42, 43) and s.generate.num_prompts == 160


def _fake_run(run_dir):
    for model, correct in (("base", [1, 0, 0, 1]), ("teacher", [1, 1, 0, 1]), ("student_seed42", [1, 1, 1, 1])):
        for bench in ("math", "gsm8k", "mmlu_math"):
            reports.write_jsonl(os.path.join(run_dir, "evaluate", model, f"{bench}.jsonl"),
                                [{"item": i, "correct": bool(c), "generation": "x" * 2000} for i, c in
                                 enumerate(correct)])
        reports.write_json(os.path.join(run_dir, "evaluate", model, "manifest.json"),
                           {"phase": f"evaluate/{model}", "seconds": 1.0})
    from latentjax.subliminal.report import build_report

    build_report({m: os.path.join(run_dir, "evaluate", m) for m in ("base", "teacher", "student_seed42")},
                 ("math", "gsm8k", "mmlu_math"), os.path.join(run_dir, "report"))
    reports.write_json(os.path.join(run_dir, "generate", "stats.json"),
                       {"sampled": 512, "valid": 300, "pass_rate": 0.586, "kept": 250, "reasons": {"format": 212},
                        "tokens_per_s": 12345.6, "tokens_per_s_after_first_batch": 23456.7, "batch_size": 512,
                        "max_new_tokens": 64})
    reports.write_jsonl(os.path.join(run_dir, "generate", "sequences.jsonl"), [{"completion": "1, 2"}] * 250)
    reports.write_json(os.path.join(run_dir, "teacher", "manifest.json"),
                       {"phase": "teacher", "seconds": 2.0,
                        "record": {"export": "best", "exported_step": 40, "last_step": 60, "exported_eval_loss": 1.2}})


def test_collect_writes_few_files_and_prints_the_table(driver, tmp_path, capsys):
    run_dir, out = str(tmp_path / "run"), str(tmp_path / "out")
    _fake_run(run_dir)
    config = driver.build_config(driver.parse_args(["--out", out, "--model", "/m"]))
    summary = driver.collect(run_dir, out, config, 12.0)
    assert sorted(os.listdir(out)) == ["accuracy.png", "eval_records.jsonl", "sequences_sample.jsonl",
                                       "summary.json", "summary.md"]
    assert len(reports.read_jsonl(os.path.join(out, "sequences_sample.jsonl"))) == 200
    records = reports.read_jsonl(os.path.join(out, "eval_records.jsonl"))
    assert len(records) == 3 * 3 * 4 and max(len(r["generation"]) for r in records) == 1500
    saved = json.load(open(os.path.join(out, "summary.json")))
    assert saved["teacher"]["exported_step"] == 40 and saved["phase_seconds"]["teacher"] == 2.0
    assert summary["generate"]["tokens_per_s"] == 12345.6
    driver.print_table(summary)
    printed = capsys.readouterr().out
    assert "McNemar p" in printed and "[" in printed and "12346 tokens/s" in printed
    assert "student_seed42" in printed and "exported step 40 of 60" in printed
    assert "Generation" in open(os.path.join(out, "summary.md")).read()
