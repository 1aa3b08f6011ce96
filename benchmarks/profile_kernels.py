"""Per-kernel GPU profiles of the suite's workloads: where the time goes that the floors do not explain.

    python benchmarks/profile_kernels.py --out $OUT [--only request,decode_b1,sample_b64,step_b64]

Builds the suite's models (`suite._pair_models`), compiles and warms each workload, then records a few runs under
`jax.profiler.trace` and reads the Perfetto trace back: per workload, the wall time per run, the GPU's span within a
run and its busy time (the union of kernel intervals), the gaps between a run's kernels (in all and per kernel
boundary), the host's time outside the run's span (before its first kernel and after its last: what a synchronised
timing adds to the GPU's work), kernels per run, the time per kernel category (matmul, attention, copy, other
fusions) and the heaviest kernels. The table is printed
last and written as $OUT/profile_kernels.json; the raw traces stay under $OUT/traces when --keep_traces.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402  (the suite's models and timing rule)

CATEGORIES = (  # first match wins; names are XLA fusion names, cuBLAS/cuDNN kernel names or Triton kernels
    ("attention", ("cudnn", "fmha", "flash", "sdpa", "attention")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "matmul", "dot")),
    ("copy", ("memcpy", "memset", "copy", "dynamic_update_slice", "dynamic-update-slice")),
    ("reduction", ("reduce", "softmax", "argmax")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def read_trace(trace_dir: str) -> list[dict]:
    """The kernels: complete ("X") events of the GPU's stream lines, from the Perfetto JSON under `trace_dir`."""
    paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: was the trace written with "
                                "create_perfetto_trace=True?")
    with gzip.open(sorted(paths)[-1], "rt") as f:
        events = json.load(f)["traceEvents"]
    meta = lambda kind: {(e["pid"], e.get("tid")) if kind == "thread_name" else e["pid"]:  # noqa: E731
                         e.get("args", {}).get("name", "") for e in events
                         if e.get("ph") == "M" and e.get("name") == kind}
    processes, threads = meta("process_name"), meta("thread_name")
    gpu = {pid for pid, name in processes.items() if "gpu" in name.lower() or "device:" in name.lower()}
    done = [e for e in events if e.get("ph") == "X" and e.get("pid") in gpu and "dur" in e]
    line = lambda e: threads.get((e["pid"], e.get("tid")), "")  # noqa: E731
    return [e for e in done if line(e).lower().startswith("stream")]


def summarize(kernels: list[dict], runs: int, wall_ms: float, top: int = 12, traced_wall_ms: float = None) -> dict:
    """Per run: the GPU's span from a run's first kernel to its last, its busy time (the union of kernel
    intervals), the gaps inside runs (span - busy, and per kernel boundary), the GPU's idle time between runs (the
    host's turnaround: returning the outputs, the synchronisation, dispatching the next run's first kernel), the
    kernel count, category ms and the `top` heaviest kernel names. Runs are told apart by the runs - 1 longest
    idle stretches of the trace, since the profiled loop synchronises after each run. `wall_ms` is the untraced
    median; `traced_wall_ms` (the traced runs' median, default wall_ms) is what the host's share is taken from."""
    if not kernels:
        return {"wall_ms": wall_ms, "kernels": 0}
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels)  # microseconds
    merged = [list(spans[0])]  # busy intervals: overlapping kernels (several streams) count once
    for s, e in spans[1:]:
        if s > merged[-1][1]:
            merged.append([s, e])
        else:
            merged[-1][1] = max(merged[-1][1], e)
    busy = sum(e - s for s, e in merged)
    gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
    between = sorted(gaps, reverse=True)[:max(runs - 1, 0)]
    in_run_gaps = sum(gaps) - sum(between)
    run_span = busy + in_run_gaps
    per = lambda us: round(us / runs / 1e3, 3)  # noqa: E731  (microseconds in total -> ms per run)
    by_cat, by_name, count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in kernels:
        by_cat[category(e["name"])] += e["dur"]
        by_name[e["name"]] += e["dur"]
        count[e["name"]] += 1
    boundaries = max(len(kernels) - runs, 1)
    return {
        "wall_ms": round(wall_ms, 3),
        "run_span_ms": per(run_span), "gpu_busy_ms": per(busy), "in_run_gaps_ms": per(in_run_gaps),
        "gap_per_kernel_us": round(in_run_gaps / boundaries, 2),
        # what the synchronised wall time adds to a run's span: the host before the first and after the last kernel
        "host_outside_run_ms": round((wall_ms if traced_wall_ms is None else traced_wall_ms) - run_span / runs / 1e3, 3),
        "kernels_per_run": round(len(kernels) / runs, 1),
        "category_ms": {k: per(v) for k, v in by_cat.most_common()},
        "top": [{"name": n[:120], "ms": per(us), "calls": round(count[n] / runs, 1), "category": category(n)}
                for n, us in by_name.most_common(top)],
    }


def profile(name: str, fn, runs: int, out: dict, keep: str = "", top: int = 12) -> None:
    import jax
    import numpy as np

    jax.block_until_ready(fn())  # compile
    jax.block_until_ready(fn())  # warm
    wall = suite.median_time(fn, warm=0, reps=max(3, runs))
    trace_dir = tempfile.mkdtemp(prefix=f"trace_{name}_")
    traced = []
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(runs):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            traced.append(time.perf_counter() - start)
    out[name] = summarize(read_trace(trace_dir), runs, wall * 1e3, top, traced_wall_ms=float(np.median(traced)) * 1e3)
    if keep:
        for path in glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True):
            shutil.copy(path, os.path.join(keep, f"{name}.trace.json.gz"))
    shutil.rmtree(trace_dir, ignore_errors=True)
    print("PROFILE " + json.dumps({name: out[name]}), flush=True)


def workloads(m: dict, rs) -> dict:
    """name -> (zero-argument function returning device arrays, runs under the profiler)."""
    import jax
    import jax.numpy as jnp

    from latentjax.inference.generate import generate
    from latentjax.inference.sampling import SamplingConfig

    mesh, rules = m["mesh"], m["rules"]
    sender_cfg, sender = m["sender_cfg"], m["sender"]
    sv, rv = sender_cfg.vocab_size - 256, m["receiver_cfg"].vocab_size - 256
    out = {}

    from latentjax.train.step import command_buffer_options

    # kernels launched one by one (no CUDA graphs), so that each is seen and named in the trace
    bridge_step = suite.bridge_train_step(m, command_buffer_options(False))

    out["step_b64"] = (bridge_step(64, rs), 2)
    out["step_b8"] = (bridge_step(8, rs), 3)

    serve = m["model"]
    ids = jnp.asarray(rs.randint(0, sv, (1, 64)), jnp.int32)
    rid = jnp.asarray(rs.randint(0, rv, (1, 24)), jnp.int32)
    def request(options=None):
        fn = jax.jit(suite.request_fn(serve, rules), compiler_options=options)

        def run():
            with jax.set_mesh(mesh):
                return fn(m["state"].params, m["frozen"], ids, rid)
        return run

    out["request"] = (request(), 5)
    # the same request without XLA's command buffers (CUDA graphs): each kernel launched on its own
    out["request_nocmdbuf"] = (request({"xla_gpu_enable_command_buffer": ""}), 5)
    prompt = jnp.asarray(rs.randint(0, sv, (1, 128)), jnp.int32)
    greedy_cfg = sender_cfg.replace(attention_impl="xla")
    out["decode_b1"] = (lambda: generate(greedy_cfg, sender, prompt, max_new_tokens=32, mesh=mesh,
                                         rules=rules).tokens, 1)
    prompts = jnp.asarray(rs.randint(0, sv, (64, 64)), jnp.int32)
    hot = SamplingConfig(temperature=1.0, top_p=0.95)
    out["sample_b64"] = (lambda: generate(sender_cfg, sender, prompts, max_new_tokens=64, sampling=hot,
                                          rng=jax.random.key(0), mesh=mesh, rules=rules).tokens, 1)
    return out


def cudnn_parity(m: dict, rs) -> dict:
    """Sender logits [2, 128] in bf16 with XLA's and with cuDNN's attention, each against the float32 forward
    (max |a - b| / max |b|): whether cuDNN's bf16 error is of the size of XLA's bf16 error; then the same on a
    padded batch (row 0 left-padded by 40, row 1 right-padded by 40) at its real tokens (cuDNN gets the index-causal
    hint there)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if jax.default_backend() != "gpu":
        return {"skipped": "cuDNN needs a GPU"}
    ids = rs.randint(0, m["sender_cfg"].vocab_size - 256, (2, 128)).astype(np.int32)

    def logits(cfg, params, mask):
        fwd = jax.jit(lambda p, i, k: suite._decoder_logits(cfg, m["rules"], p, i, k))
        with jax.set_mesh(m["mesh"]):
            out = np.asarray(fwd(params, ids, mask), np.float64)
        return out if mask is None else out[mask]

    base = m["sender_cfg"]
    f32 = base.replace(dtype="float32", param_dtype="float32", attention_impl="xla")
    params32 = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(jnp.float32), p))(m["sender"])
    padded = np.ones(ids.shape, bool)
    padded[0, :40], padded[1, -40:] = False, False
    refs = {}
    for case, mask in (("", None), ("_padded", padded)):
        refs[case] = logits(f32, params32, mask)
    del params32
    out = {}
    for case, mask in (("", None), ("_padded", padded)):
        ref = refs[case]
        for impl in ("xla", "cudnn"):
            a = logits(base.replace(attention_impl=impl), m["sender"], mask)
            out[f"rel_error_vs_f32_{impl}{case}"] = float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--only", default="request,decode_b1,sample_b64,step_b64,step_b8")
    parser.add_argument("--tag", default="", help="suffix of the JSON file (e.g. the XLA flags' variant name)")
    parser.add_argument("--no_trace", action="store_true", help="time only (no profiler)")
    parser.add_argument("--keep_traces", action="store_true")
    parser.add_argument("--top", type=int, default=12, help="heaviest kernels listed per workload")
    args = parser.parse_args()
    import numpy as np

    os.makedirs(args.out, exist_ok=True)
    keep = ""
    if args.keep_traces:
        keep = os.path.join(args.out, "traces")
        os.makedirs(keep, exist_ok=True)
    start = time.perf_counter()
    m = suite._pair_models()
    res = {"build_s": round(time.perf_counter() - start, 1), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    jobs = workloads(m, np.random.RandomState(0))
    path = os.path.join(args.out, f"profile_kernels{('_' + args.tag) if args.tag else ''}.json")
    for name in args.only.split(","):
        if name == "cudnn_parity":
            res[name] = cudnn_parity(m, np.random.RandomState(1))
            print("PROFILE " + json.dumps({name: res[name]}), flush=True)
            continue
        fn, runs = jobs[name]
        if args.no_trace:
            import jax
            jax.block_until_ready(fn())
            res[name] = {"wall_ms": round(suite.median_time(fn, warm=1, reps=max(3, runs)) * 1e3, 3)}
            print("PROFILE " + json.dumps({name: res[name]}), flush=True)
        else:
            profile(name, fn, runs, res, keep, args.top)
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    print(f"\n| workload{(' (' + args.tag + ')') if args.tag else ''} | wall ms | run span ms | busy ms | "
          "gaps in run ms | host outside run ms | kernels | us per kernel gap | matmul ms | attention ms | other ms |"
          "\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        r = res[name]
        if name == "cudnn_parity":
            print(f"| {name} | {r} |")
            continue
        c = r.get("category_ms", {})
        print(f"| {name} | {r['wall_ms']} | {r.get('run_span_ms', '')} | {r.get('gpu_busy_ms', '')} | "
              f"{r.get('in_run_gaps_ms', '')} | {r.get('host_outside_run_ms', '')} | {r.get('kernels_per_run', '')} | "
              f"{r.get('gap_per_kernel_us', '')} | {c.get('matmul', '')} | "
              f"{c.get('attention', '')} | {round(sum(v for k, v in c.items() if k not in ('matmul', 'attention')), 3)} |")


if __name__ == "__main__":
    main()
