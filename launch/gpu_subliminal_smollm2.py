"""The subliminal pipeline end to end on SmolLM2-135M-Instruct with real data, at the issue's reduced scale (GPU) or
a smoke scale (CPU, minutes), then a short table.

    python launch/gpu_subliminal_smollm2.py --model DIR --data_dir DIR --out DIR [--scale smoke|full]

It is `configs/subliminal/reduced.py` (paper protocol) run through `latentjax.subliminal.pipeline.run_pipeline`
with these changes for one H100 (`full`): the teacher trains on 2,000 MATH level 4-5 train problems (3 epochs,
5% held out, evaluated every 20 steps, the best-validation step exported), batch 32 as 4 micro-batches of 8 (the
seed's effective batch of 32), sequences cut at 1,024 tokens; generation samples batches of 512 prompts (T=1, no
top-p, 64 new tokens) until 5,000 valid sequences or `--max_prompts`; 3 students (seeds 42, 43, 44, batch 32) for
`--student_epochs` epochs (3 by default, the seed's 10 do not fit the time); base, teacher and students evaluated
on 500 MATH-500 problems, 500 GSM8K test problems and all 848 MMLU-math questions (batches of 64).

GPU memory: the prefill of `generate` computes float32 logits for every prompt position (512 x ~192 x 49,152 x 4
bytes = ~19 GB at the default batch), so give the job the whole GPU, or pass `--gen_batch 128 --eval_batch 32`
under XLA_PYTHON_CLIENT_MEM_FRACTION=0.2.

The run folder (`--run_dir`, default `runs/gpu_subliminal_<scale>`, checkpoints, adapters, every sample) stays
out of `--out`: rerunning the same command resumes an interrupted run there. `--out` receives few files:
summary.json (statistics, generation and teacher facts, phase times, the config), summary.md, accuracy.png,
sequences_sample.jsonl (the first 200 kept sequences) and eval_records.jsonl (every evaluated item of every model,
generations cut at 1,500 characters).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="", help="SmolLM2-135M-Instruct HF folder (default: the offline CPU copy)")
    p.add_argument("--data_dir", default="", help="folder with math/, math500/, gsm8k/, mmlu_math/ (../shared/data)")
    p.add_argument("--out", required=True, help="folder for the few result files")
    p.add_argument("--scale", choices=("smoke", "full"), default="full")
    p.add_argument("--run_dir", default="", help="run folder (default runs/gpu_subliminal_<scale>)")
    p.add_argument("--protocol", choices=("paper", "seed"), default="paper")
    p.add_argument("--target", type=int, default=5000, help="valid sequences to keep (full scale)")
    p.add_argument("--max_prompts", type=int, default=150000, help="prompts available to reach --target")
    p.add_argument("--student_epochs", type=float, default=3.0)
    p.add_argument("--seeds", type=int, default=3, help="student seeds (42, 43, ...)")
    p.add_argument("--eval_examples", type=int, default=500, help="items per benchmark (MATH-500, GSM8K and MMLU-math: a seeded subset of each)")
    p.add_argument("--teacher_examples", type=int, default=2000)
    p.add_argument("--teacher_lr", type=float, default=1e-5, help="peak learning rate (the seed's 1e-5)")
    p.add_argument("--student_lr", type=float, default=1e-5, help="peak learning rate (the seed's 1e-5)")
    p.add_argument("--gen_batch", type=int, default=2048,
                   help="prompts per sampling batch (full scale); screened survivors continue 512 at a time")
    p.add_argument("--eval_batch", type=int, default=64, help="items per evaluation batch (full scale)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    from configs.subliminal.defaults import smoke
    from configs.subliminal.reduced import get_config

    config = get_config(f"{args.model},{args.protocol}" if args.model else f",{args.protocol}")
    seeds = tuple(42 + i for i in range(max(1, args.seeds)))
    if args.scale == "smoke":
        # SmolLM2 passes the paper filter ~2% of the time: up to 160 prompts for 2 valid rows, students of batch 1
        config = smoke(config, steps=2, prompts=160, target=2, eval_examples=3, max_new_tokens=24, gen_batch=32)
        config.teacher.update(num_examples=8, eval_every=1)  # two evaluated steps: the best one is exported
        config.student.seeds = seeds[:2]
        config.student.train.batch_size = 1
        config.evaluate.num_examples = 3  # all benchmarks, MMLU-math included
        return config
    t, s, g, e = config.teacher, config.student, config.generate, config.evaluate
    t.update(num_examples=args.teacher_examples, seq_len=1024, buckets=(256, 512, 1024), eval_every=20,
             eval_batch_size=8, max_eval_examples=0)
    t.train.update(batch_size=32, grad_accum=4)  # micro-batches of 8: float32 logits of 8 x 1024 x 49,152 = 1.6 GB
    t.optimizer.lr, s.optimizer.lr = float(args.teacher_lr), float(args.student_lr)
    t.checkpoint.update(keep_last=1, keep_best=1)
    s.update(seeds=seeds, epochs=float(args.student_epochs), seq_len=256, buckets=(128, 256), eval_batch_size=64,
             max_eval_examples=256)
    s.eval_every = 1_000_000  # evaluated at the end only; the last step is exported
    s.train.update(batch_size=32, grad_accum=1)
    s.logging.update(progress_bar=False)
    t.logging.update(progress_bar=False)
    g.update(num_prompts=int(args.max_prompts), target=int(args.target), batch_size=int(args.gen_batch),
             max_new_tokens=64, select="first")
    e.update(num_examples=int(args.eval_examples), batch_size=int(args.eval_batch))
    return config


def _phase_seconds(run_dir: str) -> dict:
    out = {}
    for root, _, files in os.walk(run_dir):
        if "manifest.json" in files:
            m = json.load(open(os.path.join(root, "manifest.json")))
            out[m["phase"]] = round(float(m.get("seconds", 0.0)), 1)
    return out


def collect(run_dir: str, out: str, config, wall: float) -> dict:
    """Copy the few result files to `out`; returns the summary dict written there."""
    from latentjax.eval import reports

    os.makedirs(out, exist_ok=True)
    report = reports.read_json(os.path.join(run_dir, "report", "summary.json"))
    gen_stats = reports.read_json(os.path.join(run_dir, "generate", "stats.json"))
    teacher = os.path.join(run_dir, "teacher", "manifest.json")
    summary = {"report": report, "generate": gen_stats,
               "teacher": reports.read_json(teacher).get("record") if os.path.exists(teacher) else None,
               "phase_seconds": _phase_seconds(run_dir), "wall_seconds_this_call": wall,
               "config": json.loads(config.to_json_best_effort(sort_keys=True))}
    reports.write_json(os.path.join(out, "summary.json"), summary)
    md = open(os.path.join(run_dir, "report", "summary.md")).read()
    md += (f"\n## Generation\n\nsampled {gen_stats.get('sampled')}, valid {gen_stats.get('valid')} "
           f"(pass rate {gen_stats.get('pass_rate')}), kept {gen_stats.get('kept')}; "
           f"reasons {gen_stats.get('reasons')}; "
           f"tokens/s {gen_stats.get('tokens_per_s')} (after the first batch "
           f"{gen_stats.get('tokens_per_s_after_first_batch')}), batch {gen_stats.get('batch_size')}, "
           f"{gen_stats.get('max_new_tokens')} new tokens\n")
    reports.atomic_write_text(os.path.join(out, "summary.md"), md)
    png = os.path.join(run_dir, "report", "accuracy.png")
    if os.path.exists(png):
        shutil.copy(png, os.path.join(out, "accuracy.png"))
    seqs = reports.read_jsonl(os.path.join(run_dir, "generate", "sequences.jsonl"))[:200]
    reports.write_jsonl(os.path.join(out, "sequences_sample.jsonl"), seqs)
    records = []
    ev = os.path.join(run_dir, "evaluate")
    for model in sorted(os.listdir(ev)) if os.path.isdir(ev) else []:
        for bench in config.evaluate.benchmarks:
            path = os.path.join(ev, model, f"{bench}.jsonl")
            for r in reports.read_jsonl(path) if os.path.exists(path) else []:
                if isinstance(r.get("generation"), str):
                    r["generation"] = r["generation"][:1500]
                records.append({"model": model, "benchmark": bench, **r})
    reports.write_jsonl(os.path.join(out, "eval_records.jsonl"), records)
    return summary


def _pct(x) -> str:
    """A percentage, or "-" for a value the JSON holds as null (e.g. a t-interval over one seed)."""
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def print_table(summary: dict) -> None:
    rows = summary["report"]["rows"]
    print(f"\n{'benchmark':<10} {'model':<16} {'acc %':>6} {'95% Wilson CI':>15} {'n':>5} {'delta pt':>8} "
          f"{'McNemar p':>9} {'Holm p':>7} {'z p':>7}")
    for r in rows:
        f = (lambda k: f"{r[k]:.3g}" if r.get(k) is not None else "-")
        delta = f"{100 * r['delta']:+.1f}" if "delta" in r else "-"
        ci = f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
        print(f"{r['benchmark']:<10} {r['model']:<16} {_pct(r['accuracy']):>6} {ci:>15} {r['n']:>5} {delta:>8} "
              f"{f('mcnemar_p'):>9} {f('mcnemar_p_holm'):>7} {f('z_p'):>7}")
    for s in summary["report"].get("seeds", []):
        p = s.get("pooled_mcnemar_p")
        print(f"seeds {s['group']} {s['benchmark']}: mean {_pct(s['mean'])}% over {s['seeds']} seeds, "
              f"t-interval [{_pct(s['t_low'])}, {_pct(s['t_high'])}], pooled McNemar p "
              f"{'-' if p is None else format(p, '.3g')}")
    g = summary["generate"]
    tps, warm = g.get("tokens_per_s"), g.get("tokens_per_s_after_first_batch")
    every = g.get("all_calls") or {}
    speed = ("throughput: no timing recorded" if not every else
             f"{every['prompts_per_s']:.0f} prompts/s and {every['tokens_per_s']:.0f} sampled tokens/s over every call "
             f"({every['batches']} batches)")
    if tps is not None:
        speed += f"; this call {round(tps)} tokens/s ({warm if warm is None else round(warm)} after its first batch)"
    print(f"generation: {g.get('sampled')} sampled, {g.get('valid')} valid (pass rate {g.get('pass_rate', 0):.4f}), "
          f"{g.get('screened', 0)} stopped early by the screen, {g.get('kept')} kept; {speed}; batch "
          f"{g.get('batch_size')}, {g.get('max_new_tokens')} new tokens, T=1")
    if summary.get("teacher"):
        t = summary["teacher"]
        print(f"teacher: exported step {t['exported_step']} of {t['last_step']} ({t['export']}; eval/loss "
              f"{t.get('exported_eval_loss')})")
    print(f"phase seconds: {summary['phase_seconds']}; this call {summary['wall_seconds_this_call']:.0f}s")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.data_dir:
        from latentjax.data import sources

        os.environ[sources.ENV_VAR] = os.path.abspath(args.data_dir)
    from latentjax.subliminal.pipeline import run_pipeline

    config = build_config(args)
    run_dir = args.run_dir or os.path.join(ROOT, "runs", f"gpu_subliminal_{args.scale}")
    t0 = time.time()
    status = run_pipeline(config, run_dir, "all")
    print(f"phases: {status}", file=sys.stderr)
    flat = [s for v in status.values() for s in (v if isinstance(v, list) else [v])]
    if "interrupted" in flat:
        print("interrupted: rerun the same command to resume.", file=sys.stderr)
        return 0
    import jax

    if jax.process_index() == 0:
        summary = collect(run_dir, args.out, config, time.time() - t0)
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
