"""Scratch A/B (session 14, for the next GPU call): generation loops of known length (no stop tokens: XLA runs the
loop without reading its predicate back to the host each step) against the all-rows-done loop (a stop token that
can never be drawn, id = vocab size, keeps the old loop and its per-step predicate read), alternating in one
process, on the suite's sender: the b64 sample and b1 greedy decode. The tokens must be the same."""
import json, os, sys, time
sys.path.insert(0, "benchmarks")
import suite
import jax, numpy as np
from latentjax.inference.generate import generate

cfg, params, mesh, rules, prompts, prompt1, hot = suite.decode_ab_inputs()
rows, toks = [], {}
for i, name in enumerate(["known", "predicate", "known", "predicate"]):
    stops = () if name == "known" else (cfg.vocab_size,)
    run = lambda: generate(cfg, params, prompts, max_new_tokens=64, sampling=hot, rng=jax.random.key(0),
                           stop_token_ids=stops, mesh=mesh, rules=rules).tokens
    one = lambda: generate(cfg, params, prompt1, max_new_tokens=129, stop_token_ids=stops, mesh=mesh,
                           rules=rules).tokens
    jax.block_until_ready(run()); jax.block_until_ready(one())
    row = {"run": f"{name}#{i}", "sample_b64_ms": suite.median_time(run, warm=1, reps=5) * 1e3,
           "decode_b1_ms_per_token": suite.median_time(one, warm=1, reps=3) * 1e3 / 129}
    toks[name] = (np.asarray(run()), np.asarray(one()))
    rows.append(row)
    print("ROW " + json.dumps(row), flush=True)
same = all(np.array_equal(a, b) for a, b in zip(toks["known"], toks["predicate"]))
with open(os.path.join(os.environ.get("OUT", "."), "decode_ab3.json"), "w") as f:
    json.dump({"rows": rows, "same_tokens": same}, f, indent=1)
print("| run | sample b64 ms | decode b1 ms/token |\n|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['sample_b64_ms']:.1f} | {r['decode_b1_ms_per_token']:.3f} |")
print("same tokens", same)
