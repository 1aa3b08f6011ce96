"""GPU check of issue 8: SmolLM2-135M-Instruct -> SmolLM2-135M-Instruct on real GSM8K, both modes, one job.

    python launch/gpu_translator_smollm2.py --model DIR --data_dir DIR --out DIR [--scale smoke|full] [--steps N]

For each mode (`soft_plus_text`, then `soft_only`) the `cross` translator is trained for a bounded number of steps
through the registry ("translator", `configs/translator/smollm2.py`) and the shared loop, with the spec's loss
weights and the mode's context in the training rows (`train_context=mode`, the same text the evaluation gives the
target). At the last step the loop's evaluation hook generates greedy chain-of-thought answers (jitted KV-cache
loop, 256 new tokens at `full`) for the first `--eval_items` GSM8K test items and writes per-example JSONL. The
target-alone baseline (the target reading the same prompt as text) is computed once, in the first mode's
evaluation; source and target are the same checkpoint reading the same prompt greedily, so source-alone equals
target-alone by construction and is reported as such (not generated twice). Collapse statistics (invalid rate,
most frequent answers) come from `latentjax.translator.summarize`.

Choices made to fit about 5 minutes on one H100: few-shot prefix OFF (the evaluation prompt is the training
prompt, so training and evaluation prefixes are token-for-token identical; an 8-shot prefix would make every
prompt ~1,000 tokens longer); every training batch padded to one fixed shape (`data.fixed_lengths`: one compiled
step per mode, not one per length bucket); evaluation batches of 256 padded to the widest item (one compiled
generation loop per mode). `--scale smoke` runs the same path on a CPU in a few minutes (tiny steps and items).

Writes under --out: `<mode>/run/` (config.json, metrics.jsonl, checkpoint), `<mode>/eval/step_*/gsm8k_<mode>.jsonl`
and `.summary.json`, and `summary.json` (everything in the final table plus timings and settings).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODES = ("soft_plus_text", "soft_only")
SCALES = {
    # steps, batch, soft tokens, eval items, eval batch, new tokens, train rows (0 = all), max lengths, dtype
    "full": dict(steps=500, batch=16, tokens=32, eval_items=500, eval_batch=256, max_new_tokens=256, train_limit=0,
                 sender_max_tokens=192, receiver_max_tokens=576, dtype="bfloat16", lr=3e-4, warmup=50),
    "smoke": dict(steps=3, batch=2, tokens=4, eval_items=4, eval_batch=4, max_new_tokens=24, train_limit=64,
                  sender_max_tokens=192, receiver_max_tokens=576, dtype="float32", lr=3e-4, warmup=1),
}


def build_config(args, scale: dict, mode: str, baselines: bool):
    from latentjax.train import config_tools

    s = scale
    config = config_tools.load_config(
        os.path.join(ROOT, "configs", "translator", "smollm2.py")
        + f":model={args.model},kind=cross,mode={mode},context=mode,steps={s['steps']},batch={s['batch']},"
          f"tokens={s['tokens']},lr={s['lr']},seed={args.seed}")
    config.model.sender.dtype = config.model.receiver.dtype = s["dtype"]
    config.model.remat_policy = "none"  # 135M parameters: activations fit, no recomputation
    config.train.compute_dtype = "bfloat16" if s["dtype"] == "bfloat16" else ""
    config.optimizer.warmup_steps = s["warmup"]
    config.loss.kl_warmup_steps = s["warmup"]
    config.data.path = args.data_dir
    config.data.train_limit = s["train_limit"]
    config.data.sender_max_tokens = s["sender_max_tokens"]
    config.data.receiver_max_tokens = s["receiver_max_tokens"]
    config.data.fixed_lengths = True
    config.eval.update(num_samples=s["eval_items"], final_num_samples=s["eval_items"], batch_size=s["eval_batch"],
                       max_new_tokens=s["max_new_tokens"], few_shot=0, sender_few_shot=False, baselines=baselines,
                       source_alone=False, output_dir=os.path.join(args.out, mode, "eval"))
    config.eval_every = s["steps"]  # one evaluation, at the last step
    config.checkpoint.every = s["steps"]
    config.checkpoint.keep_best = 0
    config.logging.log_every = max(1, min(50, s["steps"]))
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return config


def run_mode(args, scale: dict, mode: str, baselines: bool) -> dict:
    import jax

    from latentjax.parallel.mesh import mesh_from_config
    from latentjax.train import loop, registry
    from latentjax.translator import summarize

    config = build_config(args, scale, mode, baselines)
    mesh, _ = mesh_from_config(config.mesh)
    t0 = time.perf_counter()
    experiment = registry.get("translator")(config, mesh)
    build_s = time.perf_counter() - t0
    eval_time = {}

    def timed_eval(variables, step):
        t = time.perf_counter()
        out = base_eval(variables, step)
        eval_time["s"] = time.perf_counter() - t
        return out

    base_eval = experiment.eval_fn
    experiment = dataclasses.replace(experiment, eval_fn=timed_eval)
    t1 = time.perf_counter()
    result = loop.train(config, experiment, mesh, os.path.join(args.out, mode, "run"))
    jax.effects_barrier()
    loop_s = time.perf_counter() - t1
    rows = [json.loads(line) for line in open(os.path.join(args.out, mode, "run", "metrics.jsonl"))]
    train = [r for r in rows if "train/nll_loss" in r]
    jsonl = os.path.join(args.out, mode, "eval", f"step_{result.step:07d}", f"gsm8k_{mode}.jsonl")
    stats = summarize.summarize_file(jsonl)
    print(summarize.format_summary(stats), flush=True)
    return {"mode": mode, "steps": result.step, "jsonl": jsonl, "stats": stats,
            "train_nll_first": train[0]["train/nll_loss"] if train else None,
            "train_nll_last": train[-1]["train/nll_loss"] if train else None,
            "soft_batch_std_last": train[-1].get("train/soft_batch_std") if train else None,
            "build_s": build_s, "train_s": loop_s - eval_time.get("s", 0.0), "eval_s": eval_time.get("s"),
            "translator_params": experiment.fingerprint["translator_num_params"]}


def table(results: list[dict]) -> str:
    head = f"{'system':<28} {'n':>4} {'accuracy [95% CI]':>24} {'invalid':>8} {'distinct':>8}  most frequent answers"
    lines = [head, "-" * len(head)]

    def row(name, s):
        top = ", ".join(f"{a} x{c}" for a, c in s["top_outputs"][:3])
        lines.append(f"{name:<28} {s['n']:>4} {s['accuracy']:>7.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] "
                     f"{s['invalid_rate']:>7.1%} {s['distinct_answers']:>8}  {top}")

    target = next((r["stats"]["target_alone"] for r in results if "target_alone" in r["stats"]), None)
    if target:
        row("target alone (text)", target)
        row("source alone (= target)", target)
    for r in results:
        row(f"bridged {r['mode']}", r["stats"]["bridged"])
    lines.append("")
    for r in results:
        lines.append(f"{r['mode']}: {r['steps']} steps, train nll {r['train_nll_first']:.3f} -> "
                     f"{r['train_nll_last']:.3f}, soft_batch_std {r['soft_batch_std_last']:.3g}; build "
                     f"{r['build_s']:.0f} s, train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF folder of SmolLM2-135M-Instruct (source and target)")
    parser.add_argument("--data_dir", required=True, help="folder holding gsm8k/{train,test}.jsonl (shared/data)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--steps", type=int, default=0, help="override the scale's training steps per mode")
    parser.add_argument("--eval_items", type=int, default=0, help="override the scale's number of test items")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scale = dict(SCALES[args.scale])
    scale.update({k: v for k, v in (("steps", args.steps), ("eval_items", args.eval_items)) if v})
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        parser.error(f"--modes must be among {MODES}")
    os.makedirs(args.out, exist_ok=True)

    import jax

    from latentjax.eval.reports import write_json

    t0 = time.perf_counter()
    results = [run_mode(args, scale, mode, baselines=(i == 0)) for i, mode in enumerate(modes)]
    total_s = time.perf_counter() - t0
    text = table(results)
    print("\n" + text, flush=True)
    print(f"\ntotal {total_s:.0f} s on {jax.devices()[0].device_kind}", flush=True)
    summary = {"scale": args.scale, "settings": {**scale, "few_shot": 0, "kind": "cross", "train_context": "mode",
                                                 "fixed_lengths": True, "seed": args.seed, "model": args.model},
               "device": jax.devices()[0].device_kind, "total_s": total_s,
               "source_alone_note": "source and target are the same checkpoint reading the same prompt greedily: "
                                    "source-alone = target-alone by construction (not generated twice)",
               "modes": results, "table": text}
    write_json(os.path.join(args.out, "summary.json"), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
