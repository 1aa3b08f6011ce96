"""Decode-speed variants on the Llama-3.1-8B shape (random bf16 weights, one GPU): which knob closes the distance
to the memory floor (16 GB of weights per token: about 5.5 ms at 2.95 TB/s).

    python benchmarks/decode_variants.py --out $OUT

Each variant runs in its own process (XLA flags are read at start-up): layers per scan iteration (`scan_unroll`)
and XLA's dynamic-slice fusion (lets cuBLAS read a layer's weights straight out of the stacked array instead of a
copy). Per variant: decode ms/token at batch 1, batch-64 tokens/s greedy and with top-p 0.95 (the rejection sampler;
the sort-based filter too in the first variant), prefill tokens/s with XLA and cuDNN attention. Table printed last;
JSON in $OUT/decode_variants.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402  (benchmarks/suite.py: the shared timing rule)

VARIANTS = {
    "unroll1": (1, ""),
    "unroll1_dsfusion": (1, "--xla_gpu_enable_dynamic_slice_fusion=true"),
    "unroll32": (32, ""),
    "unroll32_dsfusion": (32, "--xla_gpu_enable_dynamic_slice_fusion=true"),
}


def median_time(fn, warm=1, reps=3):
    return suite.median_time(fn, warm=warm, reps=reps)  # one timing rule for every benchmark


def run_variant(unroll: int, extras: bool) -> dict:
    import jax
    import numpy as np

    from latentjax.bridge.benchmark import LLAMA31_8B
    from latentjax.inference import sampling as sampling_lib
    from latentjax.inference.generate import generate
    from latentjax.models.config import from_hf_dict
    from latentjax.models.decoder import Decoder
    from latentjax.models.model import init_params
    from latentjax.parallel import rules as rules_lib

    tiny = os.environ.get("LATENTJAX_SUITE_TINY") == "1"
    shape = dict(LLAMA31_8B)
    if tiny:
        shape.update(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    cfg = from_hf_dict(shape, dtype="bfloat16", param_dtype="bfloat16", scan_unroll=min(unroll, shape["num_hidden_layers"]))
    params = init_params(cfg, jax.random.PRNGKey(0), mesh, rules)
    sv = cfg.vocab_size - 256
    rs = np.random.RandomState(0)
    res = {}
    prompt = rs.randint(0, sv, (1, 128)).astype(np.int32)
    run = lambda n: generate(cfg, params, prompt, max_new_tokens=n, mesh=mesh, rules=rules).tokens
    full, one = median_time(lambda: run(129)), median_time(lambda: run(1))
    res["decode_B1_ms_per_token"] = (full - one) / 128 * 1e3
    prompts = rs.randint(0, sv, (64, 64)).astype(np.int32)
    hot = sampling_lib.SamplingConfig(temperature=1.0, top_p=0.95)
    cases = [("greedy", sampling_lib.SamplingConfig()), ("top_p", hot)]
    for name, sc in cases:
        sample = lambda: generate(cfg, params, prompts, max_new_tokens=64, sampling=sc, rng=jax.random.key(0),
                                  mesh=mesh, rules=rules).tokens
        res[f"sample_B64_{name}_tokens_per_s"] = 64 * 64 / median_time(sample)
    if extras:
        fast = sampling_lib._sample_top_p
        sampling_lib._sample_top_p = lambda logits, rng, top_p: jax.random.categorical(
            rng, sampling_lib._top_p_filter_sorted(logits, top_p), axis=-1).astype(np.int32)
        sc = sampling_lib.SamplingConfig(temperature=1.0, top_p=0.9500001)  # a new static config: a fresh trace
        sample = lambda: generate(cfg, params, prompts, max_new_tokens=64, sampling=sc, rng=jax.random.key(0),
                                  mesh=mesh, rules=rules).tokens
        res["sample_B64_top_p_sorted_tokens_per_s"] = 64 * 64 / median_time(sample)
        sampling_lib._sample_top_p = fast
        x = rs.randint(0, sv, (1, 2048)).astype(np.int32)
        for impl in ("xla", "cudnn"):
            c = cfg.replace(attention_impl=impl) if hasattr(cfg, "replace") else cfg
            fwd = jax.jit(lambda p, i, c=c: Decoder(c).apply({"params": p}, i).logits[:, -1])
            try:
                with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
                    res[f"prefill_B1_T2048_{impl}_tokens_per_s"] = 2048 / median_time(lambda: fwd(params, x), 2, 5)
            except Exception as e:  # cuDNN absent (CPU) or refusing the shape
                res[f"prefill_B1_T2048_{impl}_error"] = repr(e)[:200]
    res["peak_device_gib"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=int, default=150)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        unroll, _ = VARIANTS[args.child]
        print("RESULT " + json.dumps(run_variant(unroll, extras=args.child == "unroll1")), flush=True)
        return
    results = {}
    for name in args.variants.split(","):
        unroll, flags = VARIANTS[name]
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                  env=env, timeout=args.timeout)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            results[name] = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-600:]}
        except subprocess.TimeoutExpired:
            results[name] = {"error": f"timed out after {args.timeout} s"}
        results[name]["wall_s"] = time.perf_counter() - start
        print(name, json.dumps(results[name]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "decode_variants.json"), "w") as f:
        json.dump(results, f, indent=1)
    keys = sorted({k for r in results.values() for k in r if k != "error"})
    print("\n| figure | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for k in keys:
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for r in results.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} error | {r['error'][-300:]!r} |")


if __name__ == "__main__":
    main()
