"""The suite's bridge train step compiled with different XLA options, in one process: synchronised and loop rates.

    python benchmarks/step_options.py --out $OUT [--batches 8,64] [--variants off,default,...]

Session 12's profile of the batch-8 step (H100): the GPU is busy 42.9 ms per step and idle 3.7 ms between the
step's 2,324 kernels (~1.6 us per kernel boundary); a synchronised step adds ~4 ms of host time before its first
and after its last kernel. CUDA graphs (XLA's command buffers) launch many kernels at once and can shorten the
boundaries, but are re-recorded when a step's buffers move, which is why
training steps compile without them (`latentjax.train.step.command_buffer_options`). This script measures each
variant the way the suite does (`suite.median_time`, one step waited for; `suite.loop_time`, 20 steps back to back)
and prints one table, also written as $OUT/step_options.json. Variants (name=options):
  off       no command buffers (the base configs' and LoRA's default)
  default   XLA's default command-buffer types (the bridge and translator configs' default since session 13)
  nocudnn   command buffers without cuDNN's thunks (FUSION, CUBLAS, CUBLASLT, CUSTOM_CALL)
  fusion    fusions only
  xla64     XLA's default command buffers, and "auto" attention over fewer than 64 queries (the receiver's 48-token
            rows) by XLA's implementation instead of cuDNN's (`decoder.AUTO_CUDNN_MIN_QUERIES`)
  xlaall    XLA's default command buffers, all attention by XLA's implementation
--folded_variants runs variants again on frozen models whose layers' RMSNorm scales are folded into the q/k/v and
gate/up weights (`models.model.fold_norm_scales`: no separate scale-multiply kernel after each norm).
LATENTJAX_SUITE_TINY=1 runs the suite's small shapes (a CPU check of the script).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

VARIANTS = {
    "off": {"xla_gpu_enable_command_buffer": ""},
    "default": None,
    "nocudnn": {"xla_gpu_enable_command_buffer": "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL"},
    "fusion": {"xla_gpu_enable_command_buffer": "FUSION"},
    "xla64": None,
    "xlaall": None,
}
CUDNN_MIN_QUERIES = {"xla64": 64, "xlaall": 1 << 30}  # decoder.AUTO_CUDNN_MIN_QUERIES while a variant is traced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--batches", default="8,64")
    parser.add_argument("--variants", default="off,default,nocudnn,fusion,off")  # "off" again: drift check
    parser.add_argument("--folded_variants", default="",
                        help="variants then run on frozen models rebuilt with their norm scales folded into the "
                             "projections (LATENTJAX_SUITE_FOLD=1), e.g. 'off'; empty: none")
    args = parser.parse_args()
    import gc

    import numpy as np

    from latentjax.models import decoder

    plans = [("plain", args.variants.split(","))] if args.variants else []
    if args.folded_variants:
        plans.append(("folded", args.folded_variants.split(",")))
    unknown = sorted({v for _, names in plans for v in names} - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}.")
    os.makedirs(args.out, exist_ok=True)
    rs, rows = np.random.RandomState(0), []
    for models, names in plans:
        os.environ["LATENTJAX_SUITE_FOLD"] = "0" if models == "plain" else "1"
        m = suite._pair_models()
        for i, name in enumerate(names):
            decoder.AUTO_CUDNN_MIN_QUERIES = CUDNN_MIN_QUERIES.get(name, 0)  # read when the step is traced
            one_step = suite.bridge_train_step(m, VARIANTS[name])
            for batch in map(int, args.batches.split(",")):
                run = one_step(batch, rs)
                row = {"variant": f"{'' if models == 'plain' else models + ':'}{name}#{i}", "batch": batch}
                try:
                    row["step_ms"] = suite.median_time(run) * 1e3
                    row["loop_ms"] = suite.loop_time(run, 20) * 1e3
                except Exception as e:  # an option this XLA refuses: record it, measure the rest
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                rows.append(row)
                print("ROW " + json.dumps(row), flush=True)
                with open(os.path.join(args.out, "step_options.json"), "w") as f:
                    json.dump(rows, f, indent=1)
        del m, one_step, run  # the next models need the memory
        gc.collect()
    print("\n| variant | batch | step ms (synchronised) | loop ms |\n|---|---|---|---|")
    for r in rows:
        cells = [r["error"], ""] if "error" in r else [f"{r['step_ms']:.1f}", f"{r['loop_ms']:.1f}"]
        print(f"| {r['variant']} | {r['batch']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
