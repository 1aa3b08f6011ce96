"""Token ablation: one bridge per number of soft tokens K, each trained and evaluated through the shared loop
(`latentjax.bridge.run.train_and_evaluate`), reported as a table (markdown + JSON) and a plot of accuracy against K
with Wilson 95% error bars (`latentjax.eval.reports`).

    rows = run_ablation(config, (16, 32, 64, 128), "runs/banking77_ablation")

Files in `out_dir`: `k{K}/` (each run's workdir: config, metrics, checkpoints, eval JSONL/summary; the workdirs
can live elsewhere with `run_dir`),
`ablation.json` (rows + the base config), `ablation.md`, `ablation.png`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

from ml_collections import ConfigDict

from latentjax.bridge.run import accuracy_row, train_and_evaluate
from latentjax.eval.reports import format_accuracy, markdown_table, plot_accuracy_vs_tokens, write_json
from latentjax.train.config_tools import to_jsonable

DEFAULT_TOKENS = (16, 32, 64, 128)


def config_for_tokens(config: ConfigDict, k: int) -> ConfigDict:
    """The same run with K soft tokens (a copy; the caller's config is untouched)."""
    if int(k) < 1:
        raise ValueError(f"The number of soft tokens must be positive, got {k}.")
    out = config.copy_and_resolve_references()
    out.bridge.num_latents = int(k)
    out.eval.output_dir = ""  # each run writes under its own workdir
    return out


def ablation_row(k: int, run: dict, metric: Optional[str] = None) -> dict:
    """One table row: K, the headline accuracy with its Wilson interval, generation accuracy, timings."""
    summary = run["summary"]
    row = {"tokens": int(k), **accuracy_row(summary, metric)}
    if "generation" in summary and row["metric"] != "generation":
        row["generation_accuracy"] = summary["generation"]["accuracy"]
    row.update(steps=run["steps"], train_s=round(run["train_s"], 1), eval_s=round(run["eval_s"], 1),
               workdir=run["workdir"], eval_dir=run.get("eval_dir") or os.path.join(run["workdir"], "eval"))
    return row


def write_report(rows: Sequence[dict], out_dir: str, title: str = "", base_config: Any = None) -> dict:
    """ablation.json, ablation.md and ablation.png (one point per K) in `out_dir`; returns their paths."""
    rows = sorted(rows, key=lambda r: r["tokens"])
    os.makedirs(out_dir, exist_ok=True)
    table = [{"soft tokens": r["tokens"], r["metric"]: format_accuracy(r["correct"], r["n"]), "n": r["n"],
              **({"generation": f"{100 * r['generation_accuracy']:.1f}"} if "generation_accuracy" in r else {}),
              **({"digit accuracy": f"{100 * r['digit_accuracy']:.1f}"} if "digit_accuracy" in r else {}),
              "steps": r["steps"], "train s": r["train_s"], "eval s": r["eval_s"]} for r in rows]
    metric = rows[0]["metric"] if rows else "accuracy"
    heading = f"# Token ablation{': ' + title if title else ''}\n\n{metric} accuracy (%) [Wilson 95% interval]\n\n"
    md = os.path.join(out_dir, "ablation.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(heading + markdown_table(table))
    js = write_json(os.path.join(out_dir, "ablation.json"),
                    {"title": title, "metric": metric, "rows": list(rows),
                     "config": to_jsonable(base_config) if base_config is not None else None})
    png = plot_accuracy_vs_tokens({metric: [(r["tokens"], r["correct"], r["n"]) for r in rows]},
                                  os.path.join(out_dir, "ablation.png"),
                                  title=f"{title or 'token ablation'}: {metric} vs soft tokens (Wilson 95%)",
                                  ylabel=f"{metric} accuracy (%)")
    return {"json": js, "markdown": md, "plot": png, "table": heading + markdown_table(table)}


def run_ablation(config: ConfigDict, tokens: Sequence[int] = DEFAULT_TOKENS, out_dir: str = "runs/ablation",
                 metric: Optional[str] = None, mesh: Any = None,
                 on_row: Optional[Callable[[dict], None]] = None, run_dir: Optional[str] = None) -> list[dict]:
    """Train and evaluate one bridge per K in `tokens`, rewriting the report after every K so a partial ablation
    is still on disk; returns the rows (sorted by K). Workdirs (checkpoints, metrics) are `{run_dir}/k{K}`
    (run_dir defaults to out_dir); evaluation JSONL and summaries go to `{out_dir}/k{K}/eval`."""
    tokens = [int(k) for k in tokens]
    if not tokens or len(set(tokens)) != len(tokens):
        raise ValueError(f"tokens must be distinct and non-empty, got {tokens}.")
    title = f"{config.task.name}"
    rows = []
    for k in tokens:
        cfg = config_for_tokens(config, k)
        cfg.eval.output_dir = os.path.join(out_dir, f"k{k}", "eval")
        run = train_and_evaluate(cfg, os.path.join(run_dir or out_dir, f"k{k}"), mesh=mesh)
        rows.append(ablation_row(k, run, metric))
        write_report(rows, out_dir, title, base_config=config)
        if on_row is not None:
            on_row(rows[-1])
    return sorted(rows, key=lambda r: r["tokens"])


__all__ = ["DEFAULT_TOKENS", "ablation_row", "config_for_tokens", "run_ablation", "write_report"]
