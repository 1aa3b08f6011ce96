"""One table of every Telepathy result under a runs folder, laid out like the seed's results table.

The launchers write to fixed places under one folder (launch/run_all_experiments.sh, launch/gpu_telepathy_smollm2.py):
  {task}_bridge/eval/step_*/{task}_final.summary.json     bridge (launch/train.py or bridge.run)
  {task}_ablation/ablation.json (+ k{K}/ runs)            token ablation (bridge.ablation)
  {task}_baselines/{task}_{kind}.summary.json             text baselines (bridge.baselines)
  {task}_prompt_tuning/eval/step_*/{task}_prompt_tuning_final.summary.json
`collect(runs_dir)` reads whatever of these exists; `results_markdown(collected)` renders one row per task and one
column per system for each metric (generation = the seed's rule, label scoring = argmax over the label set), each
cell "accuracy [Wilson 95%] n", plus the ablation tables.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Optional

from latentjax.eval.reports import format_accuracy, markdown_table

TASKS = ("sst2", "ag_news", "banking77", "passkey")
SYSTEMS = ("bridge", "text_relay", "receiver_text", "sender_text", "few_shot", "prompt_tuning")
METRICS = ("generation", "label_scoring")


def _read(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _final_summary(eval_root: str, task: str, infix: str = "") -> Optional[dict]:
    """The summary of the last step's final evaluation under eval_root/step_*/."""
    paths = sorted(glob.glob(os.path.join(eval_root, "step_*", f"{task}_{infix}final.summary.json")))
    return _read(paths[-1]) if paths else None


def cell(block: Optional[dict]) -> dict:
    """{accuracy, correct, n, ci95} of one metric block (None when absent)."""
    if not block:
        return {}
    return {"accuracy": block["accuracy"], "correct": block["correct"], "n": block["total"], "ci95": block["ci95"]}


def collect(runs_dir: str) -> dict:
    """{"systems": {task: {system: summary}}, "ablations": {task: ablation.json}} for what exists in runs_dir."""
    systems: dict = {}
    ablations: dict = {}
    for task in TASKS:
        found = {}
        bridge = _final_summary(os.path.join(runs_dir, f"{task}_bridge", "eval"), task)
        abl = _read(os.path.join(runs_dir, f"{task}_ablation", "ablation.json"))
        if abl:
            ablations[task] = abl
            if bridge is None:  # the bridge row of Banking77 / passkey is the ablation's K=16 run (the seed's)
                rows = {r["tokens"]: r for r in abl["rows"]}
                k = 16 if 16 in rows else min(rows) if rows else None
                if k is not None:
                    where = rows[k].get("eval_dir") or os.path.join(rows[k]["workdir"], "eval")
                    bridge = _final_summary(where, task)
        if bridge:
            found["bridge"] = bridge
        for kind in ("receiver_text", "sender_text", "few_shot", "text_relay"):
            s = _read(os.path.join(runs_dir, f"{task}_baselines", f"{task}_{kind}.summary.json"))
            if s:
                found[kind] = s
        pt = _final_summary(os.path.join(runs_dir, f"{task}_prompt_tuning", "eval"), task, "prompt_tuning_")
        if pt:
            found["prompt_tuning"] = pt
        if found:
            systems[task] = found
    return {"systems": systems, "ablations": ablations}


def _fmt(block: Optional[dict]) -> str:
    c = cell(block)
    if not c:
        return "-"
    out = f"{format_accuracy(c['correct'], c['n'])} n={c['n']}"
    if block.get("digit_accuracy") is not None:
        out += f", digits {100 * block['digit_accuracy']:.1f}"
    return out


def results_markdown(collected: dict) -> str:
    """Markdown: per metric, a task x system table; then one table per ablation."""
    parts = []
    systems = collected["systems"]
    present = [s for s in SYSTEMS if any(s in v for v in systems.values())]
    for metric in METRICS:
        rows = []
        for task, found in systems.items():
            if not any(metric in found[s] for s in found):
                continue
            rows.append({"task": task, **{s: _fmt(found.get(s, {}).get(metric)) for s in present}})
        if rows:
            title = ("generation (the seed's rule: label word in up to N greedy tokens; passkey: exact match)"
                     if metric == "generation" else "label scoring (argmax of the answer log-likelihood over labels)")
            parts.append(f"### {title}, accuracy % [Wilson 95%]\n\n" + markdown_table(rows, ["task", *present]))
    for task, abl in collected["ablations"].items():
        rows = [{"soft tokens": r["tokens"], r["metric"]: format_accuracy(r["correct"], r["n"]), "n": r["n"],
                 **({"digit accuracy": f"{100 * r['digit_accuracy']:.1f}"} if "digit_accuracy" in r else {}),
                 **({"generation": f"{100 * r['generation_accuracy']:.1f}"} if "generation_accuracy" in r else {})}
                for r in sorted(abl["rows"], key=lambda r: r["tokens"])]
        parts.append(f"### token ablation, {task}\n\n" + markdown_table(rows))
    return "\n".join(parts) if parts else "(no results found)\n"


__all__ = ["METRICS", "SYSTEMS", "TASKS", "cell", "collect", "results_markdown"]
