"""Train one bridge through the registry and the shared loop, then return its final evaluation summary.

The launchers (token ablation, the offline demo, the SmolLM2 GPU driver) call this instead of shelling out to
`launch/train.py`: same builder, same loop, same checkpoints, plus timings. The final evaluation is the one the
experiment's `eval_fn` runs at the last step; its summary JSON is written under `config.eval.output_dir`
(default `{workdir}/eval`). Rerunning a finished workdir restores the last checkpoint, trains nothing and reads
the summary already written (or evaluates the restored bridge if that summary is not in this config's
eval folder), so a launcher can be restarted after a crash without redoing finished runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Optional

from ml_collections import ConfigDict

from latentjax.bridge.evaluate import eval_dir


def final_summary_path(config: ConfigDict) -> str:
    """Where the final evaluation's summary JSON of this config's run is written."""
    return os.path.join(eval_dir(config.eval.output_dir, int(config.train.steps)),
                        f"{config.task.name}_final.summary.json")


def train_and_evaluate(config: ConfigDict, workdir: str, mesh: Any = None) -> dict:
    """Train `config` (experiment "bridge") in `workdir` and evaluate it once at the last step.

    Returns {"summary": final eval summary, "workdir", "eval_dir", "steps", "build_s" (models loaded, calibration),
    "train_s" (loop minus evaluation; includes compilation), "eval_s", "train_metrics" (last logged)}.
    """
    from latentjax.parallel.mesh import mesh_from_config
    from latentjax.train import loop, registry

    config = config.copy_and_resolve_references()  # never mutate the caller's config
    if config.experiment != "bridge":
        raise ValueError(f"train_and_evaluate runs bridge configs; this one is {config.experiment!r}.")
    if not config.eval.output_dir:
        config.eval.output_dir = os.path.join(workdir, "eval")
    steps = int(config.train.steps)
    if int(config.eval_every) <= 0 or steps % int(config.eval_every):
        config.eval_every = steps  # the final evaluation must run at the last step
    if mesh is None:
        mesh, _ = mesh_from_config(config.mesh)
    t0 = time.perf_counter()
    experiment = registry.get("bridge")(config, mesh)
    build_s = time.perf_counter() - t0
    eval_time = {"s": 0.0}
    inner = experiment.eval_fn

    def timed_eval(trainable, step):
        t = time.perf_counter()
        try:
            return inner(trainable, step)
        finally:
            eval_time["s"] += time.perf_counter() - t

    experiment = dataclasses.replace(experiment, eval_fn=timed_eval)
    t1 = time.perf_counter()
    result = loop.train(config, experiment, mesh, workdir)
    loop_s = time.perf_counter() - t1
    train_s = loop_s - eval_time["s"]  # evaluations inside the loop are not training
    path = final_summary_path(config)
    if result.preempted or result.step < steps:
        raise RuntimeError(f"The run in {workdir} stopped at step {result.step} of {steps}; rerun to resume.")
    if not os.path.exists(path):  # finished before, evaluated elsewhere (another output folder): evaluate now
        timed_eval(result.state.params, steps)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No final evaluation summary at {path}: the final evaluation wrote nothing.")
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    return {"summary": summary, "workdir": workdir, "eval_dir": config.eval.output_dir, "steps": steps,
            "build_s": build_s, "train_s": train_s, "eval_s": eval_time["s"],
            "train_metrics": result.last_metrics}


def primary_metric(summary: dict) -> tuple[str, dict]:
    """The summary's headline accuracy block: label scoring when the task has labels (no parsing ambiguity),
    else generation (passkey exact match)."""
    for key in ("label_scoring", "generation"):
        if key in summary:
            return key, summary[key]
    raise KeyError("The summary has neither label-scoring nor generation results.")


def accuracy_row(summary: dict, metric: Optional[str] = None) -> dict:
    """{metric, accuracy, correct, n, ci_low, ci_high} (+ digit_accuracy for passkey) of one summary."""
    key, block = (metric, summary[metric]) if metric else primary_metric(summary)
    row = {"metric": key, "accuracy": block["accuracy"], "correct": block["correct"], "n": block["total"],
           "ci_low": block["ci95"][0], "ci_high": block["ci95"][1]}
    if "digit_accuracy" in block:
        row["digit_accuracy"] = block["digit_accuracy"]
    return row


__all__ = ["accuracy_row", "final_summary_path", "primary_metric", "train_and_evaluate"]
