"""The Pallas decode-attention kernel alone, under several launch options, against XLA's attention: one table.

    python benchmarks/decode_kernel_sweep.py --out $OUT [--blocks 32,64,128] [--warps 4,8] [--stages 1,2,3]
        [--masked 0,1]

Session 14's profile of the b64 sample (H100) has the kernel at 14.3 us per layer and decode step, reading ~25 MB
of filled cache slots (~1.8 TB/s of the 2.95 TB/s copy ceiling), so the launch options are worth a sweep. Each
case runs the attention 200 times inside one jitted loop (each output is the next query: nothing is hoisted and no
host dispatch is timed), at the 8B sender's decode shapes: 32 query heads over 8 kv heads of 128. Every option set
is also checked against float32 attention before it is timed (the same bound as the GPU test). `--masked 1`:
the kernel reads and writes only each kv head's real query rows (`masked_rows`) instead of q padded to 16 rows
before the call and the output sliced after it; the timed call includes that pad and slice. Cases:
b64_sample (64 rows, 128 slots, 96 filled: the middle of the b64 sample), b64_full (128 filled), b8 (192 slots,
160 filled), b1_long (4,096 slots, 3,000 filled). `--tiny` runs small shapes in Pallas' interpreter (a CPU check).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time

CASES = {"b64_sample": (64, 128, 96), "b64_full": (64, 128, 128), "b8": (8, 192, 160), "b1_long": (1, 4096, 3000)}
TINY_CASES = {"tiny": (2, 40, 30)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--blocks", default="32,64,128")
    parser.add_argument("--warps", default="4,8")
    parser.add_argument("--stages", default="1,2,3")
    parser.add_argument("--masked", default="0,1")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from latentjax.models.decode_attention import decode_attention

    interpret = jax.default_backend() != "gpu"
    if interpret and not args.tiny:
        raise SystemExit("This sweep times Triton kernels: run it on a GPU, or pass --tiny for a CPU check.")
    heads, kv_heads, dim = (4, 2, 16) if args.tiny else (32, 8, 128)
    cases = TINY_CASES if args.tiny else {c: CASES[c] for c in args.cases.split(",")}
    reps = 3 if args.tiny else args.reps
    options = [None] + list(itertools.product(*(map(int, a.split(",")) for a in (args.blocks, args.warps,
                                                                                   args.stages, args.masked))))
    rows = []
    for case, (batch, slots, filled) in cases.items():
        rs = np.random.RandomState(batch + slots)
        q, k, v = (jnp.asarray(rs.randn(*s), jnp.bfloat16) for s in [(batch, 1, heads, dim),
                                                                       (batch, slots, kv_heads, dim),
                                                                       (batch, slots, kv_heads, dim)])
        allowed = jnp.asarray(np.arange(slots)[None, :] >= rs.randint(0, filled // 4, (batch, 1))) & (
            jnp.arange(slots) < filled)[None, :]
        mask = allowed[:, None, None, :]
        with jax.default_matmul_precision("highest"):
            exact = np.asarray(jax.nn.dot_product_attention(*(a.astype(jnp.float32) for a in (q, k, v)), mask=mask))
        for opt in options:
            if opt is None:
                name = "xla"
                attend = lambda q_: jax.nn.dot_product_attention(  # noqa: E731
                    q_, k, v, mask=mask, implementation="xla")
            else:
                name = "block{}_warps{}_stages{}".format(*opt) + ("_masked" if opt[3] else "")
                attend = lambda q_, o=opt: decode_attention(  # noqa: E731
                    q_, k, v, allowed, filled, interpret=interpret, block_slots=o[0], num_warps=o[1],
                    num_stages=o[2], masked_rows=bool(o[3]))
            row = {"case": case, "impl": name}
            try:
                out = np.asarray(attend(q), np.float32)
                row["rel_err"] = float(np.max(np.abs(out - exact)) / np.max(np.abs(exact)))
                loop = jax.jit(lambda q0, f=attend: jax.lax.fori_loop(0, reps, lambda i, x: f(x), q0))
                jax.block_until_ready(loop(q))
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    jax.block_until_ready(loop(q))
                    times.append(time.perf_counter() - t)
                row["us"] = float(np.median(times)) / reps * 1e6
                read = 2 * batch * filled * kv_heads * dim * 2  # keys and values of the filled slots, bf16
                row["tb_per_s"] = read / (row["us"] * 1e-6) / 1e12
            except Exception as e:  # an option set Triton refuses (e.g. shared memory): record it, go on
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            print("ROW " + json.dumps(row), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "decode_kernel_sweep.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| case | impl | us per call | TB/s of filled slots | max rel err vs f32 |\n|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | {r['impl']} | {r['error']} | | |")
        else:
            print(f"| {r['case']} | {r['impl']} | {r['us']:.2f} | {r['tb_per_s']:.2f} | {r['rel_err']:.4f} |")


if __name__ == "__main__":
    main()
