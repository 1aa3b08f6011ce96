"""Statistics of a subliminal run: accuracy with Wilson intervals per model and benchmark, each model vs the baseline
on the same items (exact McNemar, one-sided: H1 the model is better) and unpaired (two-proportion z-test,
one-sided), Holm-corrected across benchmarks per model; over student seeds a t-interval of per-seed accuracies
and a pooled McNemar. Writes summary.json, summary.md and accuracy.png.

Input: {model name: folder with `{benchmark}.jsonl`} (records with `item` and `correct`), as written by
`evaluate_phase.evaluate_model`. Models named `<group>_seed<N>` are grouped as seeds of `<group>`.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Optional

from latentjax.eval import reports, stats


def _load(folder: str, benchmark: str) -> Optional[dict]:
    path = os.path.join(folder, f"{benchmark}.jsonl")
    if not os.path.exists(path):
        return None
    return {r["item"]: bool(r["correct"]) for r in reports.read_jsonl(path)}


def seed_group(name: str) -> Optional[str]:
    m = re.fullmatch(r"(.+)_seed\d+", name)
    return m.group(1) if m else None


def compare(model: dict, base: dict, alternative: str = "greater") -> dict:
    """Paired McNemar and unpaired z-test of `model` vs `base` ({item: correct}) on their common items."""
    items = sorted(set(model) & set(base))
    a, b = [model[i] for i in items], [base[i] for i in items]
    mc = stats.mcnemar_exact(a, b, alternative=alternative)
    k1, k2, n = sum(a), sum(b), len(items)
    z, zp = stats.two_proportion_ztest(k1, n, k2, n, alternative=alternative) if n else (float("nan"), 1.0)
    return {"n_paired": n, "delta": (k1 - k2) / n if n else float("nan"), "model_only": mc.a_only,
            "base_only": mc.b_only, "mcnemar_p": mc.p_value, "z": z, "z_p": zp}


def build_report(models: Mapping[str, str], benchmarks, out_dir: str, baseline: str = "base",
                 alternative: str = "greater", alpha: float = 0.05, confidence: float = 0.95) -> dict:
    """Compute the tables and write `out_dir`/summary.{json,md} and accuracy.png; returns the summary dict."""
    data = {m: {b: _load(folder, b) for b in benchmarks} for m, folder in models.items()}
    rows, plot = [], {}
    for bench in benchmarks:
        base = data.get(baseline, {}).get(bench)
        for m in models:
            res = data[m][bench]
            if res is None:
                continue
            k, n = sum(res.values()), len(res)
            lo, hi = stats.wilson_interval(k, n, confidence)
            row = {"benchmark": bench, "model": m, "k": k, "n": n, "accuracy": k / n if n else float("nan"),
                   "ci_low": lo, "ci_high": hi}
            if base is not None and m != baseline:
                row.update(compare(res, base, alternative))
            rows.append(row)
            plot.setdefault(bench, {})[m] = (k, n)
    # Holm across benchmarks, per model (the family is one model's benchmarks)
    for m in models:
        mine = [r for r in rows if r["model"] == m and "mcnemar_p" in r]
        if mine:
            adjusted = stats.holm_adjust([r["mcnemar_p"] for r in mine])
            for r, p in zip(mine, adjusted):
                r["mcnemar_p_holm"] = p
                r["significant"] = bool(p < alpha)
    seeds = []
    groups = sorted({g for g in (seed_group(m) for m in models) if g})
    for g in groups:
        members = [m for m in models if seed_group(m) == g]
        for bench in benchmarks:
            accs = [r["accuracy"] for r in rows if r["model"] in members and r["benchmark"] == bench]
            base = data.get(baseline, {}).get(bench)
            if not accs:
                continue
            t = stats.t_interval(accs, confidence)
            entry = {"group": g, "benchmark": bench, "seeds": len(accs), "mean": t.mean, "std": t.std,
                     "t_low": t.ci_low, "t_high": t.ci_high}
            if base is not None:
                pairs = []
                for m in members:
                    res = data[m][bench]
                    if res is not None:
                        items = sorted(set(res) & set(base))
                        pairs.append(([res[i] for i in items], [base[i] for i in items]))
                entry["pooled_mcnemar_p"] = stats.mcnemar_exact_pooled(pairs, alternative).p_value
            seeds.append(entry)
    summary = {"baseline": baseline, "alternative": alternative, "alpha": alpha, "confidence": confidence,
               "rows": rows, "seeds": seeds}
    os.makedirs(out_dir, exist_ok=True)
    reports.write_json(os.path.join(out_dir, "summary.json"), summary)
    table = [{"benchmark": r["benchmark"], "model": r["model"], "acc %": 100 * r["accuracy"],
              "95% CI": f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]", "n": r["n"],
              "Δ pt": 100 * r["delta"] if "delta" in r else "", "McNemar p": r.get("mcnemar_p", ""),
              "Holm p": r.get("mcnemar_p_holm", ""), "z p": r.get("z_p", "")} for r in rows]
    md = "# Subliminal run summary\n\n" + reports.markdown_table(table) + "\n"
    if seeds:
        md += "\n## Seeds\n\n" + reports.markdown_table(seeds) + "\n"
    reports.atomic_write_text(os.path.join(out_dir, "summary.md"), md)
    if plot:
        try:
            reports.plot_benchmark_bars(plot, os.path.join(out_dir, "accuracy.png"), confidence=confidence)
        except ValueError as e:  # stats.wilson_interval(0, n) can return a lower bound of ~1e-17 > 0 = accuracy
            print(f"warning: accuracy plot not written ({e}).", file=sys.stderr)
    return summary
