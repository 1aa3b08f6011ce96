"""SmolLM2-135M-Instruct -> SmolLM2-135M-Instruct through the Telepathy bridge on real data (issue 5's first real
numbers): bridge on SST-2 (all 872 validation sentences) and AG News (first 1,000 test articles), the text
baselines on the same rows, and a token ablation (K = 16/32/64/128) on SST-2. Prints one table; writes
`{out}/summary.json`, `{out}/results.md`, `{out}/sst2_ablation/ablation.png` and every run's files.

    python launch/gpu_telepathy_smollm2.py --model /models/SmolLM2-135M-Instruct --data_dir ../shared/data \
        --out $OUT --scale full        # one H100: sized for about 5 minutes
    python launch/gpu_telepathy_smollm2.py --model $(python -m latentjax.convert.gguf --smollm2) \
        --data_dir ../shared/data --out /tmp/tele_smoke --scale smoke   # CPU, minutes

Layout under --out (the one `launch/telepathy_table.py` reads): `{task}_bridge/eval/` (JSONL + summary),
`{task}_baselines/{task}_{kind}.jsonl|.summary.json`, `sst2_ablation/k{K}/eval/` + ablation.md/.json/.png.
Workdirs (checkpoints: ~120 MB per run) and the compilation cache go to --run_dir, outside --out; runs are resumed
or skipped when started again with the same --run_dir and --out. Config: configs/telepathy/smollm2.py (bf16
frozen models and a float32 bridge at `full`; float32 at `smoke`). With one model as sender and receiver the
sender_text baseline is the receiver_text baseline (same model, same prompt): it is run once and reported once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# steps per bridge run, ablation steps per K, eval rows per task (0 = whole split), ablation eval rows, K list
SCALES = {
    "smoke": dict(steps=4, ablation_steps=3, rows={"sst2": 8, "ag_news": 8}, ablation_rows=8, tokens=(16, 32, 64, 128),
                  relay_tokens=8),
    "full": dict(steps=500, ablation_steps=250, rows={"sst2": 0, "ag_news": 1000}, ablation_rows=0,
                 tokens=(16, 32, 64, 128), relay_tokens=50),
}
# Sender prompts are left-padded to multiples of this. The library's 32 gives SST-2 up to 4 training shapes (4
# compilations per run); at `full` one 128 bucket holds every SST-2 prompt (truncated to 128 tokens) and every AG
# News prompt (256 characters), so each run compiles its train step once. The GPU has the padded FLOPs to spare.
SENDER_BUCKETS = {"smoke": 32, "full": 128}
BASELINE_KINDS = ("receiver_text", "few_shot", "text_relay")


def apply_overrides(config, overrides) -> None:
    """`a.b=value` strings (value read as a Python literal, else a string) set on an existing config key."""
    import ast

    from latentjax.train.config_tools import check_key

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set {item!r} is not key=value (e.g. loss.diversity_weight=1.0).")
        try:
            check_key(config, key)
        except KeyError as e:
            raise SystemExit(f"error: {e}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (int, float)) and not isinstance(
            node[leaf], bool) else value


def task_config(task: str, scale: str, model: str, data_dir: str, steps: int, rows: int, overrides=()):
    from latentjax.train.config_tools import load_config

    config = load_config(os.path.join(ROOT, "configs", "telepathy", "smollm2.py") + f":task={task},scale={scale}")
    config.model.sender.path = config.model.receiver.path = model
    config.task.data_dir = data_dir
    config.train.steps = steps
    config.eval_every = steps
    config.checkpoint.every = steps
    config.eval.final_num_samples = rows
    config.eval.subset = "first"
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    config.logging.log_every = max(1, min(50, steps // 4))
    apply_overrides(config, overrides)
    return config


def step_times(workdir: str) -> dict:
    """Steady step time (median over later log windows) and the first window's excess (compilation, mostly)."""
    try:
        rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    except OSError:
        return {}
    win = [(r["step"], r["perf/step_time_s"]) for r in rows if "perf/step_time_s" in r]
    if len(win) < 2:
        return {}
    steady = sorted(t for _, t in win[1:])[len(win[1:]) // 2]
    first_steps = win[0][0]
    return {"steady_step_ms": 1000 * steady, "first_window_excess_s": max(0.0, (win[0][1] - steady) * first_steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct HF folder (sender and receiver)")
    parser.add_argument("--data_dir", required=True, help="folder with sst2/ and ag_news/ (shared/data)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--steps", type=int, default=None, help="bridge steps (SST-2 and AG News)")
    parser.add_argument("--ablation_steps", type=int, default=None, help="steps per K of the SST-2 ablation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every bridge run, e.g. --set loss.diversity_weight=1.0 "
                             "--set model.sender.layer=-1 (repeatable; mistyped keys are refused)")
    parser.add_argument("--sender_bucket", type=int, default=None,
                        help="sender padding multiple (default: 128 at full, 32 at smoke)")
    parser.add_argument("--run_dir", default=None,
                        help="workdirs (checkpoints, metrics) and the compilation cache, kept out of --out so that "
                             "only results come back (default: $TMPDIR/latentjax_telepathy_smollm2)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: bridge, baselines, ablation")
    args = parser.parse_args()
    for path, what in ((args.model, "--model"), (args.data_dir, "--data_dir")):
        if not os.path.isdir(path):
            parser.error(f"{what} folder {path} does not exist.")

    from absl import logging

    logging.set_verbosity(logging.WARNING)
    import tempfile

    import jax

    run_dir = os.path.abspath(args.run_dir or os.path.join(tempfile.gettempdir(), "latentjax_telepathy_smollm2"))

    # A rerun with the same --out reuses compiled programs (runs of different K or task still compile their own).
    jax.config.update("jax_compilation_cache_dir", os.path.join(run_dir, "jax_cache"))
    from latentjax.bridge.ablation import run_ablation
    from latentjax.bridge.baselines import evaluate_baseline
    from latentjax.bridge.results import collect, results_markdown
    from latentjax.bridge.run import train_and_evaluate
    from latentjax.eval.reports import atomic_write_text, write_json

    s = SCALES[args.scale]
    from latentjax.bridge import batching

    batching.SENDER_BUCKET = args.sender_bucket or SENDER_BUCKETS[args.scale]  # read at batch time by pad_batch
    steps, abl_steps = args.steps or s["steps"], args.ablation_steps or s["ablation_steps"]
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    model, data_dir, out = (os.path.abspath(p) for p in (args.model, args.data_dir, args.out))
    os.makedirs(out, exist_ok=True)
    device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    print(f"SmolLM2 -> SmolLM2 telepathy, scale {args.scale}, on {device}; output in {out}", flush=True)
    t_all = time.perf_counter()
    timings: dict = {}

    def write_results() -> str:
        """results.md + summary.json of everything finished so far (rewritten after every part, so a run cut
        short by a time limit still leaves its finished parts' table)."""
        collected = collect(out)
        table = results_markdown(collected)
        atomic_write_text(os.path.join(out, "results.md"), table)
        write_json(os.path.join(out, "summary.json"), {
            "scale": args.scale, "device": device, "model": model, "steps": steps, "ablation_steps": abl_steps,
            "overrides": args.set, "sender_bucket": batching.SENDER_BUCKET, "run_dir": run_dir,
            "total_s": time.perf_counter() - t_all, "timings": timings, "results": collected,
            "note": "sender_text is receiver_text here: one model is both sender and receiver."})
        return table

    def timed(name, fn):
        t = time.perf_counter()
        result = fn()
        timings[name] = {"wall_s": round(time.perf_counter() - t, 1)}
        if isinstance(result, dict) and "train_s" in result:
            timings[name].update(build_s=round(result["build_s"], 1), train_s=round(result["train_s"], 1),
                                 eval_s=round(result["eval_s"], 1), **step_times(result["workdir"]))
        print(f"[{time.perf_counter() - t_all:6.0f} s] {name}: {timings[name]}", flush=True)
        write_results()
        return result

    configs = {task: task_config(task, args.scale, model, data_dir, steps, s["rows"][task], args.set)
               for task in ("sst2", "ag_news")}
    for task, config in configs.items():
        if "bridge" not in skip:
            config.eval.output_dir = os.path.join(out, f"{task}_bridge", "eval")
            timed(f"{task}_bridge",
                  lambda c=config, t=task: train_and_evaluate(c, os.path.join(run_dir, f"{t}_bridge")))
        if "baselines" not in skip:
            config.baseline.relay_summary_tokens = s["relay_tokens"]
            config.baseline.batch_size = 64 if args.scale == "full" else 8
            for kind in BASELINE_KINDS:
                timed(f"{task}_{kind}", lambda c=config, k=kind, t=task:
                      evaluate_baseline(c, k, os.path.join(out, f"{t}_baselines")))
    if "ablation" not in skip:
        abl = task_config("sst2", args.scale, model, data_dir, abl_steps, s["ablation_rows"], args.set)
        timed("sst2_ablation", lambda: run_ablation(abl, s["tokens"], os.path.join(out, "sst2_ablation"),
                                                    run_dir=os.path.join(run_dir, "sst2_ablation")))

    table = write_results()
    total = time.perf_counter() - t_all
    print("\n" + table)
    plot = os.path.join(out, "sst2_ablation", "ablation.png")
    print("sender_text = receiver_text (the same SmolLM2 reads the same prompt). "
          f"Total {total:.0f} s on {device}. Files: {out}/summary.json, {out}/results.md"
          + (f", {plot}" if os.path.exists(plot) else ""))


if __name__ == "__main__":
    main()
