"""GPU benchmark: LoRA r=128 train step on the Llama-3.1-8B shape (random bf16 base), all seven projections.

    python benchmarks/lora_8b.py --out $OUT            # remat none / minimal / full, each in its own process

Batch 4 x 512 tokens, the reference script's shape. Prints step time, tokens/s, peak device memory and MFU
(model FLOPs, counted causally: 4N per token through the frozen base (forward + activation gradients, no weight
gradients), 6 x 2 x L x T^2 x D attention per sequence, LoRA's own 6 x r x (in + out) per token per projection;
rematerialised recomputation is not counted) against the measured 813 TFLOP/s bf16 ceiling.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REFERENCE = {"none": 337.0, "minimal": None, "full": 512.0}  # ms/step, PyTorch+PEFT on an H100 (remat = "full")
PEAK_TFLOPS = 813.0
BATCH, SEQ, RANK = 4, 512, 128


def shape_config(remat: str, attention: str = "xla"):
    from latentjax.models.config import DecoderConfig, RopeConfig

    return DecoderConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
        head_dim=128, rope=RopeConfig(theta=500000.0, rope_type="llama3", factor=8.0), dtype="bfloat16",
        param_dtype="bfloat16", remat_policy=remat, attention_impl=attention)


def flops_per_step(cfg) -> float:
    d, m, L, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    qkvo = d * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    n_matmul = L * (qkvo + 3 * d * m) + d * v
    tokens = BATCH * SEQ
    lora_dims = [(d, cfg.num_heads * cfg.head_dim), (d, cfg.num_kv_heads * cfg.head_dim),
                 (d, cfg.num_kv_heads * cfg.head_dim), (cfg.num_heads * cfg.head_dim, d), (d, m), (d, m), (m, d)]
    lora = L * sum(RANK * (i + o) for i, o in lora_dims)
    attention = 6 * 2 * L * SEQ * SEQ * cfg.num_heads * cfg.head_dim / 2 * BATCH  # causal: half the square
    return 4 * n_matmul * tokens + 6 * lora * tokens + attention


def run_one(remat: str, attention: str = "xla") -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from latentjax.lora.adapter import init_lora
    from latentjax.lora.config import LoraConfig
    from latentjax.lora.sft import make_loss_fn
    from latentjax.models.model import init_params
    from latentjax.parallel import rules as rules_lib
    from latentjax.train.state import init_state, state_shardings
    from latentjax.train.step import make_train_step

    cfg = shape_config(remat, attention)
    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    base = init_params(cfg, jax.random.key(0), mesh)
    lora_cfg = LoraConfig(rank=RANK, alpha=2.0 * RANK, targets="all")
    init = lambda rng: init_lora(cfg, lora_cfg, rng)
    opt = optax.adamw(1e-4)
    shardings = state_shardings(init, opt, mesh, rules)
    state = init_state(init, opt, 0, shardings, mesh, rules)
    step = make_train_step(make_loss_fn(cfg, lora_cfg, rules), opt, mesh, rules, shardings,
                           {k: ("batch", "length") for k in ("input_ids", "attention_mask", "loss_mask")},
                           compute_dtype=jnp.bfloat16)
    rs = np.random.RandomState(0)
    batch = {"input_ids": rs.randint(10, cfg.vocab_size, size=(BATCH, SEQ)).astype(np.int32),
             "attention_mask": np.ones((BATCH, SEQ), np.int32), "loss_mask": np.ones((BATCH, SEQ), np.int32)}
    times = []
    for i in range(12):
        t = time.perf_counter()
        state, metrics = step(state, base, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t)
    sec = float(np.median(times[2:]))
    stats = jax.devices()[0].memory_stats() or {}
    return {"remat": remat, "step_ms": sec * 1e3, "tokens_per_s": BATCH * SEQ / sec,
            "peak_device_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
            "mfu_vs_813": flops_per_step(cfg) / sec / (PEAK_TFLOPS * 1e12), "loss": float(metrics["loss"]),
            "reference_ms": REFERENCE[remat], "compile_and_first_step_s": times[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--one", default=None)
    parser.add_argument("--remat", default="none,minimal,full")
    args = parser.parse_args()
    if args.one:
        remat, _, attention = args.one.partition(":")  # e.g. "minimal:auto" (cuDNN attention where it applies)
        print("RESULT " + json.dumps(run_one(remat, attention or "xla")), flush=True)
        return
    rows = []
    for remat in args.remat.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", remat], capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            sys.stderr.write(proc.stderr[-4000:])
            rows.append({"remat": remat, "error": f"exit {proc.returncode}"})
            continue
        rows.append(json.loads(lines[-1][7:]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lora_8b.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| remat | step ms | tokens/s | peak GiB | MFU | reference ms |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['remat']} | {r['error']} | | | | |")
        else:
            print(f"| {r['remat']} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_device_gib']:.1f} | "
                  f"{r['mfu_vs_813']:.1%} | {r['reference_ms']} |")


if __name__ == "__main__":
    main()
