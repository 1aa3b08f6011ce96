"""GPU benchmark: LoRA r=128 train step on the Llama-3.1-8B shape (random bf16 base), all seven projections.

    python benchmarks/lora_8b.py --out $OUT            # remat none / minimal / full, each in its own process
    python benchmarks/lora_8b.py --out $OUT --remat minimal --attention auto --loss_chunk 0,128
    python benchmarks/lora_8b.py --one minimal:auto:chunk=128   # one case in this process (RESULT json line)
    python benchmarks/lora_8b.py --one minimal:auto:chunk=128:backward=recompute
    python benchmarks/lora_8b.py --analyze --remat minimal --loss_chunk 0,128   # compile only, no device memory
    python benchmarks/lora_8b.py --scale smoke --out /tmp/x   # tiny shape, CPU: proves the script runs

A case is "remat[:attention[:chunk=N[:backward=fused|recompute]]]" with optional ":layers=flat" (per-layer base),
":cmdbuf=on" and ":base=fused" (one q/k/v and one gate/up matmul per layer, the adapter unchanged); chunk=N
computes the loss N sequence positions at a time from the final hidden states (`latentjax.train.chunked_loss`, the lora_sft config's
model.loss_chunk / model.loss_backward) instead of the full float32 logits [4, 512, 128256]. --analyze compiles each case from abstract shapes (any backend, even this CPU) and
reports XLA's buffer assignment (temporaries + arguments + outputs - aliased), to count the memory a case needs.

Batch 4 x 512 tokens, the reference script's shape. Prints step time (median of synchronised steps), the
training loop's step time (steps back to back, one synchronisation: `suite.loop_time`), tokens/s, peak device memory and MFU
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
# The step time is the median of the last STEADY of STEPS steps, the steady state a training run sees; first_steps_ms
# (the median of steps 2-11, the measure until session 5) is reported too: with XLA's command buffers on, the two
# differed by 10-20 ms on the per-layer step.
STEPS, STEADY = 32, 20
SMOKE = dict(batch=2, seq=48, rank=8, steps=4)  # --scale smoke: a tiny float32 shape any CPU runs in seconds


def parse_case(case: str) -> tuple[str, str, int, str, str, bool, bool]:
    """"minimal:auto:chunk=128" -> ("minimal", "auto", 128, "fused", "scanned", False, False); attention defaults to
    "xla", chunk to 0 (off), backward to "fused", layers to "scanned" ("flat": per-layer base weights,
    scan_layers=False), cmdbuf (XLA's GPU command buffers) to the training loop's default
    (`train.xla_command_buffers`, off), base to "separate" ("fused": one q/k/v and one gate/up matmul per layer,
    `fused_projections=True`)."""
    parts = case.split(":")
    remat, attention = parts[0], (parts[1] if len(parts) > 1 and parts[1] else "xla")
    opts = {"chunk": "0", "backward": "fused", "layers": "scanned", "cmdbuf": "", "base": "separate"}
    for opt in parts[2:]:
        key, _, value = opt.partition("=")
        if key not in opts or (key == "chunk" and not value.isdigit()) or \
                (key == "backward" and value not in ("fused", "recompute")) or \
                (key == "layers" and value not in ("scanned", "flat")) or \
                (key == "cmdbuf" and value not in ("on", "off")) or \
                (key == "base" and value not in ("separate", "fused")):
            raise ValueError(f"Unknown case option {opt!r} in {case!r}; expected "
                             "remat[:attention[:chunk=N][:backward=fused|recompute][:layers=scanned|flat]"
                             "[:cmdbuf=on|off][:base=separate|fused]].")
        opts[key] = value
    from latentjax.train.step import TRAIN_COMMAND_BUFFERS

    cmdbuf = opts["cmdbuf"] == "on" if opts["cmdbuf"] else TRAIN_COMMAND_BUFFERS
    return remat, attention, int(opts["chunk"]), opts["backward"], opts["layers"], cmdbuf, opts["base"] == "fused"


def shape_config(remat: str, attention: str = "xla", scale: str = "8b", layers: str = "scanned", fused: bool = False):
    from latentjax.models.config import DecoderConfig, RopeConfig

    if scale == "smoke":
        return DecoderConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=16, remat_policy=remat, attention_impl="xla",
                             scan_layers=layers == "scanned", fused_projections=fused)
    return DecoderConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
        head_dim=128, rope=RopeConfig(theta=500000.0, rope_type="llama3", factor=8.0), dtype="bfloat16",
        param_dtype="bfloat16", remat_policy=remat, attention_impl=attention, scan_layers=layers == "scanned",
        fused_projections=fused)


def flops_per_step(cfg, batch: int = BATCH, seq: int = SEQ, rank: int = RANK) -> float:
    d, m, L, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    qkvo = d * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    n_matmul = L * (qkvo + 3 * d * m) + d * v
    tokens = batch * seq
    lora_dims = [(d, cfg.num_heads * cfg.head_dim), (d, cfg.num_kv_heads * cfg.head_dim),
                 (d, cfg.num_kv_heads * cfg.head_dim), (cfg.num_heads * cfg.head_dim, d), (d, m), (d, m), (m, d)]
    lora = L * sum(rank * (i + o) for i, o in lora_dims)
    attention = 6 * 2 * L * seq * seq * cfg.num_heads * cfg.head_dim / 2 * batch  # causal: half the square
    return 4 * n_matmul * tokens + 6 * lora * tokens + attention


def _setup(remat: str, attention: str, loss_chunk: int, backward: str, layers: str, cmdbuf: bool, fused: bool,
           scale: str, abstract: bool = False):
    """(cfg, dims, mesh, rules, base params, state, step, batch); abstract=True: shapes only, nothing allocated."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from latentjax.lora.adapter import init_lora
    from latentjax.lora.config import LoraConfig
    from latentjax.lora.sft import BATCH_AXES, make_loss_fn
    from latentjax.models.model import init_params, param_shardings
    from latentjax.parallel import rules as rules_lib
    from latentjax.train.state import abstract_state, init_state, state_shardings
    from latentjax.train.step import command_buffer_options, make_train_step

    cfg = shape_config(remat, attention, scale, layers, fused)
    batch_size, seq, rank = (SMOKE["batch"], SMOKE["seq"], SMOKE["rank"]) if scale == "smoke" else (BATCH, SEQ, RANK)
    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    lora_cfg = LoraConfig(rank=rank, alpha=2.0 * rank, targets="all")
    init = lambda rng: init_lora(cfg, lora_cfg, rng)
    opt = optax.adamw(1e-4)
    shardings = state_shardings(init, opt, mesh, rules)
    if abstract:
        p_sh = param_shardings(cfg, mesh, rules)
        base = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            rules_lib.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), mesh))), p_sh)
        state = abstract_state(init, opt, shardings)
    else:
        base = init_params(cfg, jax.random.key(0), mesh)
        state = init_state(init, opt, 0, shardings, mesh, rules)
    loss_fn = make_loss_fn(cfg, lora_cfg, rules, loss_chunk=loss_chunk, loss_backward=backward)
    step = make_train_step(loss_fn, opt, mesh, rules, shardings,
                           dict(BATCH_AXES), compute_dtype=jnp.bfloat16 if scale != "smoke" else None,
                           frozen_shardings=param_shardings(cfg, mesh, rules) if abstract else None,
                           compiler_options=command_buffer_options(cmdbuf))
    rs = np.random.RandomState(0)
    batch = {"input_ids": rs.randint(10, cfg.vocab_size, size=(batch_size, seq)).astype(np.int32),
             "attention_mask": np.ones((batch_size, seq), np.int32), "loss_mask": np.ones((batch_size, seq), np.int32)}
    return cfg, (batch_size, seq, rank), mesh, rules, base, state, step, batch


def run_one(remat: str, attention: str = "xla", loss_chunk: int = 0, backward: str = "fused",
            layers: str = "scanned", cmdbuf: bool = False, fused: bool = False, scale: str = "8b",
            profile_out: str = "") -> dict:
    import jax
    import numpy as np

    cfg, (b, t, r), _, _, base, state, step, batch = _setup(remat, attention, loss_chunk, backward, layers, cmdbuf,
                                                            fused, scale)
    batch = jax.device_put(batch, step.batch_shardings(batch.keys()))  # on the device before timing, as the reference's
    from suite import loop_time

    metrics = None

    def one():
        nonlocal state, metrics
        state, metrics = step(state, base, batch)
        return metrics["loss"]

    times = []
    for i in range(SMOKE["steps"] if scale == "smoke" else STEPS):
        start = time.perf_counter()
        jax.block_until_ready(one())
        times.append(time.perf_counter() - start)
    sec = float(np.median(times[-STEADY:]))
    loop_sec = loop_time(one, STEADY)  # the training loop's rate: steps back to back, one synchronisation
    stats = jax.devices()[0].memory_stats() or {}
    if profile_out:  # per-kernel profile of two more steps (benchmarks/profile_kernels.py)
        import profile_kernels

        profile_kernels.profile(f"lora_{remat}_{layers}", one, 2, {}, keep="", top=40)
    return {"remat": remat, "attention": attention, "loss_chunk": loss_chunk, "loss_backward": backward,
            "layers": layers, "command_buffers": cmdbuf, "fused_base": fused, "scale": scale, "step_ms": sec * 1e3,
            "tokens_per_s": b * t / sec,
            "peak_device_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
            "mfu_vs_813": flops_per_step(cfg, b, t, r) / sec / (PEAK_TFLOPS * 1e12), "loss": float(metrics["loss"]),
            "reference_ms": REFERENCE.get(remat) if scale == "8b" else None, "compile_and_first_step_s": times[0],
            "first_steps_ms": float(np.median(times[2:12])) * 1e3, "loop_step_ms": loop_sec * 1e3,
            "step_times_ms": [round(x * 1e3, 1) for x in times[1:]]}


def largest_buffers(dump_dir: str, n: int = 12) -> list:
    """The n largest values of the step's XLA buffer assignment (from an --xla_dump_to folder): (MiB, name, shape);
    it shows what sits in the peak (logits, their gradient, per-layer weight slices, ...)."""
    import glob
    import re

    files = [f for f in glob.glob(os.path.join(dump_dir, "*buffer-assignment.txt")) if "step" in os.path.basename(f)]
    if not files:
        return []
    best: dict = {}
    for line in open(max(files, key=os.path.getsize)):
        m = re.search(r"value: <\d+ (\S+) @\d+> \(size=(\d+),offset=\d+\): (\S+)", line)
        if m and not m.group(1).startswith(("state", "frozen", "batch")):
            size, name, shape = int(m.group(2)), m.group(1), m.group(3).split("{")[0]
            best[shape] = max(best.get(shape, (0, "")), (size, name))
    top = sorted(((size, name, shape) for shape, (size, name) in best.items()), reverse=True)[:n]
    return [(round(size / 2**20, 1), name, shape) for size, name, shape in top]


def analyze_one(remat: str, attention: str = "xla", loss_chunk: int = 0, backward: str = "fused",
                layers: str = "scanned", cmdbuf: bool = False, fused: bool = False, scale: str = "8b",
                dump_dir: str = "") -> dict:
    """XLA's memory plan of the compiled step, from abstract shapes (nothing allocated, any backend); with
    `dump_dir` (XLA_FLAGS=--xla_dump_to=dump_dir set before jax starts) also its largest non-argument buffers."""
    import jax

    from latentjax.parallel import rules as rules_lib

    _, _, mesh, rules, base, state, step, batch = _setup(remat, attention, loss_chunk, backward, layers, cmdbuf,
                                                         fused, scale, abstract=True)
    sh = step.batch_shardings(batch.keys())
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh[k]) for k, v in batch.items()}
    start = time.perf_counter()
    with rules_lib.activate(mesh, rules):
        compiled = step.jitted(base, batch.keys()).lower(state, base, batch).compile()
    m = compiled.memory_analysis()
    gib = lambda n: n / 2**30
    total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return {"remat": remat, "attention": attention, "loss_chunk": loss_chunk, "loss_backward": backward,
            "scale": scale, "backend": jax.default_backend(), "temp_gib": gib(m.temp_size_in_bytes),
            "argument_gib": gib(m.argument_size_in_bytes), "output_gib": gib(m.output_size_in_bytes),
            "alias_gib": gib(m.alias_size_in_bytes), "planned_total_gib": gib(total),
            "compile_s": time.perf_counter() - start,
            "largest_buffers_mib": largest_buffers(dump_dir) if dump_dir else []}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--one", default=None, help="one case, remat[:attention[:chunk=N]], in this process")
    parser.add_argument("--remat", default="none,minimal,full")
    parser.add_argument("--attention", default="xla")
    parser.add_argument("--loss_chunk", default="0", help="comma-separated; 0 = full logits")
    parser.add_argument("--loss_backward", default="fused", help="comma-separated: fused, recompute")
    parser.add_argument("--scale", default="8b", choices=("8b", "smoke"))
    parser.add_argument("--analyze", action="store_true", help="compile only; report XLA's memory plan")
    parser.add_argument("--profile", default="", help="with --one: also print a per-kernel profile (any value)")
    args = parser.parse_args()
    if args.one:
        if not args.analyze:
            print("RESULT " + json.dumps(run_one(*parse_case(args.one), scale=args.scale,
                                                 profile_out=args.profile)), flush=True)
            return
        import tempfile

        dump = tempfile.mkdtemp(prefix="lora_8b_xla_")  # before jax starts: XLA reads its flags once
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_dump_to={dump} --xla_dump_hlo_module_re=.*step.*").strip()
        print("RESULT " + json.dumps(analyze_one(*parse_case(args.one), scale=args.scale, dump_dir=dump)), flush=True)
        return
    rows = []
    for remat in args.remat.split(","):
        variants = [(int(c), bwd) for c in args.loss_chunk.split(",") for bwd in args.loss_backward.split(",")]
        for chunk, bwd in dict.fromkeys((c, b if c else "fused") for c, b in variants):  # chunk 0: no backward
            case = f"{remat}:{args.attention}:chunk={chunk}:backward={bwd}"
            cmd = [sys.executable, __file__, "--one", case, "--scale", args.scale] + (["--analyze"] * args.analyze)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if not lines:
                sys.stderr.write(proc.stderr[-4000:])
                rows.append({"remat": remat, "loss_chunk": chunk, "loss_backward": bwd,
                             "error": f"exit {proc.returncode}"})
                continue
            rows.append(json.loads(lines[-1][7:]))
    os.makedirs(args.out, exist_ok=True)
    name = "lora_8b" + ("_analyze" if args.analyze else "") + ("" if args.scale == "8b" else f"_{args.scale}")
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(rows, f, indent=1)
    if args.analyze:
        print_table(rows, ["planned GiB", "temp GiB", "args GiB", "backend"], lambda r: [
            f"{r['planned_total_gib']:.3f}", f"{r['temp_gib']:.3f}", f"{r['argument_gib']:.2f}", r["backend"]])
        for r in rows:  # what the temporaries are made of
            print(f"\nlargest step buffers, remat {r['remat']}, loss chunk {r['loss_chunk']} {r['loss_backward']} (MiB, name, shape):")
            for b in r.get("largest_buffers_mib", [])[:8]:
                print("   ", *b)
        return
    print_table(rows, ["step ms", "loop ms", "tokens/s", "peak GiB", "MFU", "reference ms"], lambda r: [
        f"{r['step_ms']:.1f}", f"{r['loop_step_ms']:.1f}", f"{r['tokens_per_s']:.0f}", f"{r['peak_device_gib']:.1f}",
        f"{r['mfu_vs_813']:.1%}", str(r["reference_ms"])])


def print_table(rows: list, columns: list, cells) -> None:
    """One markdown row per case: remat, loss chunk, then `cells(row)` (or the case's error)."""
    print("\n| remat | loss chunk | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 2))
    for r in rows:
        case = f"{r['remat']} | {r['loss_chunk']} {r['loss_backward'] if r['loss_chunk'] else ''}"
        values = [r["error"]] + [""] * (len(columns) - 1) if "error" in r else cells(r)
        print(f"| {case} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
