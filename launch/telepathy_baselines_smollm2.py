"""Every telepathy baseline for one HF model as sender and receiver (SmolLM2-135M-Instruct -> itself), on the real
tasks, with the same evaluation as the bridge; prints a table and writes `{out}/baselines_summary.json`.

    python launch/telepathy_baselines_smollm2.py --model /models/SmolLM2-135M-Instruct --data_dir ../shared/data \
        --out $OUT --scale full                       # GPU: SST-2 all 872 validation rows, AG News first 1000 test
    python launch/telepathy_baselines_smollm2.py --model $(python -c "from latentjax.convert.gguf import \
        smollm2_path; print(smollm2_path())") --data_dir ../shared/data --out /tmp/b --scale smoke   # CPU, minutes

Per task: receiver_text, few_shot (k=5), text_relay (summary <= 50 tokens) through
`latentjax.bridge.baselines.evaluate_baseline`; sender_text only when --sender differs from --model (with one model
it is receiver_text); prompt tuning (primer and text layouts) through the shared training loop when
--prompt_tuning_steps > 0. Files per run under `{out}/{task}/`.
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

SCALES = {  # rows per task (None = whole split), dtype, eval/generation batch, prompt-tuning steps
    "smoke": dict(rows={"sst2": 8, "ag_news": 8}, dtype="float32", batch=8, pt_steps=4),
    "full": dict(rows={"sst2": None, "ag_news": 1000}, dtype="bfloat16", batch=64, pt_steps=300),
}


def task_config(task: str, model: str, sender: str, data_dir: str, dtype: str, batch: int, rows):
    from latentjax.train.config_tools import load_config

    config = load_config(os.path.join(ROOT, "configs", "telepathy", f"{task}.py"))
    config.model.receiver.path, config.model.sender.path = model, sender
    config.model.receiver.dtype = config.model.sender.dtype = dtype
    config.task.data_dir = data_dir
    config.eval.final_num_samples = rows or 0
    config.eval.subset = "first"
    config.eval.batch_size = batch
    config.baseline.batch_size = batch
    return config


def prompt_tuning(task: str, layout: str, args, scale: dict, out: str) -> dict:
    import jax

    from latentjax.parallel.mesh import make_mesh
    from latentjax.train import config_tools, loop, registry

    config = config_tools.load_config(os.path.join(ROOT, "configs", "telepathy", "prompt_tuning.py")
                                      + f":base={task},layout={layout}")
    config.model.receiver.path = args.model
    config.model.receiver.dtype = scale["dtype"]
    config.task.data_dir = args.data_dir
    steps = args.prompt_tuning_steps if args.prompt_tuning_steps >= 0 else scale["pt_steps"]
    config.train.steps = steps
    config.train.batch_size, config.train.grad_accum = (8, 1) if args.scale == "smoke" else (32, 2)
    config.eval_every = steps
    config.eval.final_num_samples = scale["rows"][task] or 0
    config.eval.batch_size = scale["batch"]
    config.eval.output_dir = os.path.join(out, "eval")
    config.checkpoint.every = steps
    config.logging.tensorboard = False
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    loop.train(config, registry.get("prompt_tuning")(config, mesh), mesh, os.path.join(out, "run"))
    path = os.path.join(out, "eval", f"step_{steps:07d}", f"{task}_prompt_tuning_final.summary.json")
    with open(path) as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF folder (receiver, and sender unless --sender)")
    p.add_argument("--sender", default="", help="HF folder of a different sender (default: --model)")
    p.add_argument("--data_dir", required=True, help="folder with sst2/ and ag_news/ (../shared/data)")
    p.add_argument("--out", required=True)
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--tasks", default="sst2,ag_news")
    p.add_argument("--baselines", default="receiver_text,sender_text,few_shot,text_relay")
    p.add_argument("--prompt_tuning_steps", type=int, default=-1, help="-1 = the scale's default, 0 = skip")
    args = p.parse_args()
    from latentjax.bridge.baselines import evaluate_baseline
    from latentjax.eval.reports import write_json

    scale = SCALES[args.scale]
    sender = args.sender or args.model
    rows, models = [], {}  # one load per model folder for every task and baseline
    for task in args.tasks.split(","):
        config = task_config(task, args.model, sender, args.data_dir, scale["dtype"], scale["batch"],
                             scale["rows"][task])
        for kind in args.baselines.split(","):
            if kind == "sender_text" and sender == args.model:
                continue  # one model: identical to receiver_text
            start = time.time()
            s = evaluate_baseline(config, kind, os.path.join(args.out, task), cache=models)
            rows.append(dict(task=task, baseline=kind, seconds=time.time() - start, **{
                k: s[k] for k in ("accuracy", "ci95_low", "ci95_high", "n", "primary_metric")},
                label_scoring=s.get("label_scoring", {}).get("accuracy"),
                label_scoring_ci95=s.get("label_scoring", {}).get("ci95")))
            print(f"{task} {kind}: {s['accuracy']:.3f} ({s['n']} rows, {rows[-1]['seconds']:.0f} s)", flush=True)
        steps = args.prompt_tuning_steps if args.prompt_tuning_steps >= 0 else scale["pt_steps"]
        for layout in ("primer", "text") if steps else ():
            start = time.time()
            s = prompt_tuning(task, layout, args, scale, os.path.join(args.out, task, f"prompt_tuning_{layout}"))
            rows.append(dict(task=task, baseline=f"prompt_tuning_{layout}", seconds=time.time() - start,
                             **{k: s[k] for k in ("accuracy", "ci95_low", "ci95_high", "n", "primary_metric")},
                             label_scoring=s.get("label_scoring", {}).get("accuracy"),
                             label_scoring_ci95=s.get("label_scoring", {}).get("ci95")))
    write_json(os.path.join(args.out, "baselines_summary.json"),
               {"model": args.model, "sender": sender, "scale": args.scale, "rows": rows})
    print(f"\n{'task':<8} {'baseline':<22} {'gen acc':>7} {'95% CI':<15} {'label acc':>9} {'n':>5} {'s':>6}")
    for r in rows:
        ls = "-" if r["label_scoring"] is None else f"{r['label_scoring']:.3f}"
        print(f"{r['task']:<8} {r['baseline']:<22} {r['accuracy']:>7.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"
              f" {ls:>9} {r['n']:>5} {r['seconds']:>6.0f}")


if __name__ == "__main__":
    main()
