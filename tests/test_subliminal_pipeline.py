"""Subliminal pipeline end to end on a tiny random Llama with SmolLM2's tokenizer that writes digits: every phase,
artifacts and manifests, rerun skips, generation resumes after an interruption without duplicates, a changed
config is refused, the teacher adapter loads with peft."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from configs.subliminal.defaults import smoke, subliminal_config
from latentjax.eval import reports
from latentjax.subliminal import numbers
from latentjax.subliminal.pipeline import TeacherGateError, PhaseChangedError, run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore")


def _config(model_dir):
    c = smoke(subliminal_config(model_dir), steps=2, prompts=32, target=4, eval_examples=3, max_new_tokens=16,
              gen_batch=8)
    c.teacher.num_examples = 8
    c.teacher.eval_every = 1  # both teacher steps evaluated: the exported adapter is the better one
    return c


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, smollm2_dir):
    from latentjax.subliminal.tiny import save_number_model

    return save_number_model(str(tmp_path_factory.mktemp("numbers_model") / "m"), tokenizer_dir=smollm2_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir, data_dir):
    del data_dir  # MATH, GSM8K and MMLU come from ../shared/data (skipped without it)
    run_dir = str(tmp_path_factory.mktemp("sub") / "run")
    status = run_pipeline(_config(model_dir), run_dir, "all")
    return run_dir, status


def _mtimes(run_dir):
    return {os.path.join(r, f): os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(run_dir) for f in fs
            if f == "manifest.json" or f.endswith(".safetensors")}


def test_all_phases_write_artifacts_and_manifests(run):
    run_dir, status = run
    assert status["train_teacher"] == "done" and status["generate"] == "done"
    # base and teacher were evaluated by the gate before generation; the evaluate phase found them finished
    assert status["train_student"] == ["done"] and status["evaluate"] == ["skipped", "skipped", "done"]
    for phase in ("teacher", "generate", "student_seed42", "evaluate/base", "evaluate/teacher",
                  "evaluate/student_seed42"):
        m = reports.read_json(os.path.join(run_dir, phase, "manifest.json"))
        assert m["phase"] == phase and len(m["config_sha256"]) == 64
        assert m["inputs"] and all(len(h) == 64 for h in m["inputs"].values())
        for out in m["outputs"].values():
            assert os.path.exists(os.path.join(run_dir, out["path"]))
    for who in ("teacher", "student_seed42"):
        assert os.path.exists(os.path.join(run_dir, who, "adapter", "adapter_model.safetensors"))
        cfg = json.load(open(os.path.join(run_dir, who, "adapter", "adapter_config.json")))
        assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"
    teacher_rows = reports.read_jsonl(os.path.join(run_dir, "teacher", "data.jsonl"))
    assert len(teacher_rows) == 8 and {r["level"] for r in teacher_rows} <= {"Level 4", "Level 5"}
    # generation: every kept row passes the filter, reasons add up, the kept count is the target
    samples = reports.read_jsonl(os.path.join(run_dir, "generate", "samples.jsonl"))
    seqs = reports.read_jsonl(os.path.join(run_dir, "generate", "sequences.jsonl"))
    stats = reports.read_json(os.path.join(run_dir, "generate", "stats.json"))
    assert [r["index"] for r in samples] == list(range(32))
    assert len(seqs) == 4 == stats["kept"]
    assert all(numbers.filter_paper(r["completion"]).valid for r in seqs)
    assert stats["valid"] + sum(stats["reasons"].values()) == stats["sampled"] == 32
    assert all("seed_numbers" in r and "phrase_ids" in r for r in seqs)
    student_rows = reports.read_jsonl(os.path.join(run_dir, "student_seed42", "data.jsonl"))
    assert [r["completion"] for r in student_rows] == [r["completion"] for r in seqs]  # raw completions (paper)
    # evaluation and report
    for model in ("base", "teacher", "student_seed42"):
        for bench in ("math", "gsm8k", "mmlu_math"):
            recs = reports.read_jsonl(os.path.join(run_dir, "evaluate", model, f"{bench}.jsonl"))
            assert len(recs) == 3 and all("correct" in r for r in recs)
        mmlu = reports.read_jsonl(os.path.join(run_dir, "evaluate", model, "mmlu_math.jsonl"))
        assert all(r["extracted"] in "ABCD" and len(r["scores"]) == 4 for r in mmlu)
    summary = reports.read_json(os.path.join(run_dir, "report", "summary.json"))
    assert len(summary["rows"]) == 9
    student = [r for r in summary["rows"] if r["model"] == "student_seed42"]
    assert all("mcnemar_p" in r and "mcnemar_p_holm" in r and "z_p" in r for r in student)
    assert "| student_seed42 |" in open(os.path.join(run_dir, "report", "summary.md")).read()


def test_rerun_skips_finished_phases(run, model_dir):
    run_dir, _ = run
    before = _mtimes(run_dir)
    status = run_pipeline(_config(model_dir), run_dir, "all")
    assert status["train_teacher"] == "skipped" and status["generate"] == "skipped"
    assert status["train_student"] == ["skipped"] and status["evaluate"] == ["skipped"] * 3
    assert _mtimes(run_dir) == before  # nothing retrained or rewritten


def test_generate_resumes_without_duplicates_and_refuses_changes(run, model_dir, tmp_path):
    run_dir, _ = run
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    samples_path = os.path.join(copy, "generate", "samples.jsonl")
    full = reports.read_jsonl(samples_path)
    # interrupted during generation: no manifest, 1.5 batches written and a torn line
    os.remove(os.path.join(copy, "generate", "manifest.json"))
    os.remove(os.path.join(copy, "generate", "sequences.jsonl"))
    with open(samples_path, "w") as f:
        for r in full[:12]:
            f.write(json.dumps(r) + "\n")
        f.write('{"index": 12, "prom')
    assert run_pipeline(_config(model_dir), copy, "generate")["generate"] == "done"
    resumed = reports.read_jsonl(samples_path)
    assert [r["index"] for r in resumed] == list(range(32))  # none missing, none duplicated
    assert resumed == full  # same per-batch randomness as the uninterrupted run
    stats = reports.read_json(os.path.join(copy, "generate", "stats.json"))
    assert stats["all_calls"]["prompts"] == 32  # throughput over both calls, the re-sampled batch counted once
    assert stats["all_calls"]["wall_seconds"] >= stats["all_calls"]["sample_seconds"] > 0
    assert reports.read_jsonl(os.path.join(copy, "generate", "sequences.jsonl")) == \
        reports.read_jsonl(os.path.join(run_dir, "generate", "sequences.jsonl"))
    # identical sequences: the student's inputs are unchanged, so it is still finished
    assert run_pipeline(_config(model_dir), copy, "train_student")["train_student"] == ["skipped"]
    changed = _config(model_dir)
    changed.generate.select_seed = 7
    with pytest.raises(PhaseChangedError, match="redo=generate"):
        run_pipeline(changed, copy, "generate")
    assert run_pipeline(changed, copy, "generate", redo=["generate"])["generate"] == "done"


def test_teacher_adapter_loads_with_peft(run, model_dir):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir, _ = run
    adapter = os.path.join(run_dir, "teacher", "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter)
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(saved) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    key = next(k for k in saved if "q_proj.lora_B" in k)
    match = [v for k, v in loaded.items() if k.replace(".default", "").endswith(key.split("base_model.model.")[-1])]
    assert match and torch.allclose(match[0], saved[key])


def test_teacher_exports_its_best_validation_step(run, model_dir):
    """The teacher manifest names the exported step; it is the kept checkpoint with the lowest held-out loss, and
    the PEFT adapter holds exactly that checkpoint's LoRA weights."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from latentjax.lora.peft import import_peft
    from latentjax.models.config import load_hf_config

    run_dir, _ = run
    record = reports.read_json(os.path.join(run_dir, "teacher", "manifest.json"))["record"]
    assert record["export"] == "best" and record["last_step"] == 2
    evals = {r["step"]: r["eval/loss"] for r in reports.read_jsonl(os.path.join(run_dir, "teacher", "train",
                                                                                  "metrics.jsonl")) if "eval/loss" in r}
    assert sorted(evals) == [1, 2]  # eval_every=1: every step evaluated and checkpointed
    want = min(evals, key=lambda s: (evals[s], s))
    assert record["exported_step"] == want and record["exported_eval_loss"] == pytest.approx(evals[want])
    kept = record["eval_loss_of_kept_checkpoints"]  # from Orbax's stored metrics, agreeing with the loop's log
    assert kept and all(v == pytest.approx(evals[int(k)]) for k, v in kept.items())
    assert reports.read_json(os.path.join(run_dir, "teacher", "train_result.json"))["exported_step"] == want
    manager = ocp.CheckpointManager(os.path.join(run_dir, "teacher", "train", "checkpoints"))
    saved = manager.restore(want, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]
    manager.close()
    exported = import_peft(os.path.join(run_dir, "teacher", "adapter"), load_hf_config(model_dir))
    flat_saved = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
    flat_exported = dict(jax.tree_util.tree_flatten_with_path(exported)[0])
    assert flat_saved.keys() == flat_exported.keys() and flat_saved
    for k, v in flat_saved.items():
        np.testing.assert_allclose(np.asarray(flat_exported[k], np.float32), np.asarray(v, np.float32),
                                   rtol=1e-6, atol=1e-7, err_msg=str(k))


def test_seed_protocol_base_numbers_control(run, model_dir, data_dir, tmp_path):
    """The seed's protocol (plain text, seed filter, first valid rows, numbers re-joined) on numbers written by the
    untrained base (the paper's main control): no teacher phase, generation stops at the target."""
    from configs.subliminal.defaults import control_config

    del data_dir
    c = control_config(model_dir, "seed", True, source="base", control="")
    c = smoke(c, steps=2, prompts=48, target=3, eval_examples=2, max_new_tokens=16, gen_batch=8)
    c.evaluate.update(benchmarks=("mmlu_math",), mmlu_mode="generate")  # the seed's generate-and-parse letters
    status = run_pipeline(c, str(tmp_path / "run"), "all")
    assert status["train_teacher"] == "disabled" and status["generate"] == "done"
    assert not os.path.exists(tmp_path / "run" / "teacher")
    samples = reports.read_jsonl(str(tmp_path / "run" / "generate" / "samples.jsonl"))
    seqs = reports.read_jsonl(str(tmp_path / "run" / "generate" / "sequences.jsonl"))
    assert len(samples) % 8 == 0 and sum(r["valid"] for r in samples) >= 3  # whole batches, stopped at the target
    assert len(seqs) == 3 and all(numbers.filter_seed(r["completion"]).valid for r in seqs)
    assert [r["index"] for r in seqs] == [r["index"] for r in samples if r["valid"]][:3]  # the first valid ones
    assert all(r["design"] == "seed" and len(r["seed_numbers"]) == 3 for r in seqs)
    student = reports.read_jsonl(str(tmp_path / "run" / "student_seed42" / "data.jsonl"))
    assert [r["completion"] for r in student] == [r["canonical"] for r in seqs]
    assert all(re.fullmatch(r"\d+(, \d+)*", r["completion"]) for r in student)
    cfg = json.load(open(tmp_path / "run" / "student_seed42" / "train" / "config.json"))
    assert cfg["data"]["chat"] is False and cfg["data"]["completion_only"] is False
    assert cfg["data"]["prompt_template"].startswith("User: {prompt}")
    summary = reports.read_json(str(tmp_path / "run" / "report" / "summary.json"))
    assert {r["model"] for r in summary["rows"]} == {"base", "student_seed42"}
    mmlu = reports.read_jsonl(str(tmp_path / "run" / "evaluate" / "base" / "mmlu_math.jsonl"))
    assert len(mmlu) == 2 and all("generation" in r and r["extracted"] in (None, "A", "B", "C", "D") for r in mmlu)
    # the main run's report adds the control's students, tested against the main run's base on the same items
    main_dir, _ = run
    report = run_pipeline(_config(model_dir), main_dir, "report", compare_runs={"basenums": str(tmp_path / "run")})
    assert report["report"] == "10 rows"
    rows = reports.read_json(os.path.join(main_dir, "report", "summary.json"))["rows"]
    control = [r for r in rows if r["model"] == "basenums_seed42"]
    assert len(control) == 1 and control[0]["benchmark"] == "mmlu_math" and control[0]["n_paired"] == 2


def test_teacher_gate_reports_and_can_stop_before_generation(run, model_dir, tmp_path):
    run_dir, _ = run
    gate = reports.read_json(os.path.join(run_dir, "teacher", "gate.json"))  # the default gate (warn) ran
    base = reports.read_jsonl(os.path.join(run_dir, "evaluate", "base", "math.jsonl"))
    assert gate["benchmark"] == "math" and gate["mode"] == "warn"
    assert gate["base_pct"] == pytest.approx(100.0 * sum(r["correct"] for r in base) / len(base))
    assert gate["passed"] == (gate["teacher_pct"] - gate["base_pct"] > gate["min_points"])
    copy = str(tmp_path / "gated")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("generate", "student_seed*", "report"))
    strict = _config(model_dir)
    strict.gate.update(mode="stop", min_points=100.0)  # no teacher can gain more than 100 points
    with pytest.raises(TeacherGateError, match="gate.mode=warn"):
        run_pipeline(strict, copy, "all")
    assert not os.path.exists(os.path.join(copy, "generate"))  # stopped before generation, teacher kept
    assert os.path.isdir(os.path.join(copy, "teacher", "adapter"))
    assert reports.read_json(os.path.join(copy, "teacher", "gate.json"))["passed"] is False
