"""Scratch A/B (session 14; ran on commit 8f50d1c, deferred_norms reverted after it in da43587): the suite's sender (random bf16 8B, per-layer, fused projections, folded norm scales)
with its norms applied before the projections (folded) or to their outputs (deferred_norms), same process,
alternating: the b64 sample (64 new tokens, top-p 0.95; `auto` attention, i.e. the Pallas decode kernel from
session 14) and b1 greedy decode (128-token prompt, 129 new tokens, as the suite). Every run is kept."""
import json, os, sys, time, traceback
sys.path.insert(0, "benchmarks")
import suite
import jax, jax.numpy as jnp, numpy as np
from latentjax.inference.generate import generate
from latentjax.inference.sampling import SamplingConfig

cfg, params, mesh, rules = suite.decode_sender()
rs = np.random.RandomState(0)
prompts = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (64, 64)), jnp.int32)
prompt1 = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (1, 128)), jnp.int32)
hot = SamplingConfig(temperature=1.0, top_p=0.95)
rows, toks = [], {}
order = sys.argv[1].split(",") if len(sys.argv) > 1 else ["folded", "deferred", "folded", "deferred"]
for i, name in enumerate(order):
    c = cfg.replace(deferred_norms=name == "deferred")
    row = {"run": f"{name}#{i}"}
    try:
        run = lambda: generate(c, params, prompts, max_new_tokens=64, sampling=hot, rng=jax.random.key(0),
                               mesh=mesh, rules=rules).tokens
        t0 = time.perf_counter(); jax.block_until_ready(run()); row["first_s"] = time.perf_counter() - t0
        sec = suite.median_time(run, warm=1, reps=5)
        row["sample_b64_ms"], row["tokens_per_s"] = sec * 1e3, 4096 / sec
        toks[name] = np.asarray(run())
        one = lambda: generate(c, params, prompt1, max_new_tokens=129, mesh=mesh, rules=rules).tokens
        jax.block_until_ready(one())
        row["decode_b1_ms_per_token"] = suite.median_time(one, warm=1, reps=3) * 1e3 / 129
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:600]}"
        traceback.print_exc()
    rows.append(row)
    print("ROW " + json.dumps(row), flush=True)
res = {"rows": rows}
if len(toks) == 2:
    res["sampled_first_token_equal"] = float(np.mean(toks["folded"][:, 0] == toks["deferred"][:, 0]))
with open(os.path.join(os.environ.get("OUT", "."), "decode_ab2.json"), "w") as f:
    json.dump(res, f, indent=1)
print("| run | sample b64 ms | tokens/s | decode b1 ms/token |\n|---|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r.get('sample_b64_ms', r.get('error', ''))} | {r.get('tokens_per_s', '')} | "
          f"{r.get('decode_b1_ms_per_token', '')} |")
print("first token agreement", res.get("sampled_first_token_equal"))
