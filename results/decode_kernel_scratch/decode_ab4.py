"""Scratch A/B (session 14, for the next GPU call): the decode kernel reading and writing only each kv head's real
query rows (decode_attention.MASKED_ROWS) against q padded to 16 rows and the output sliced after the call,
alternating in one process on the suite's sender (`auto` attention: the kernel up to batch 127): the b64 sample and
b1 greedy decode. The tokens must be the same."""
import json, os, sys
sys.path.insert(0, "benchmarks")
import suite
import jax, numpy as np
from latentjax.inference.generate import generate
from latentjax.models import decode_attention as da

cfg, params, mesh, rules, prompts, prompt1, hot = suite.decode_ab_inputs()
rows, toks = [], {}
for i, name in enumerate(["padded", "masked", "padded", "masked"]):
    da.MASKED_ROWS = name == "masked"  # read when the loop is traced
    jax.clear_caches()
    run = lambda: generate(cfg, params, prompts, max_new_tokens=64, sampling=hot, rng=jax.random.key(0),
                           mesh=mesh, rules=rules).tokens
    one = lambda: generate(cfg, params, prompt1, max_new_tokens=129, mesh=mesh, rules=rules).tokens
    jax.block_until_ready(run()); jax.block_until_ready(one())
    row = {"run": f"{name}#{i}", "sample_b64_ms": suite.median_time(run, warm=1, reps=5) * 1e3,
           "decode_b1_ms_per_token": suite.median_time(one, warm=1, reps=3) * 1e3 / 129}
    toks[name] = (np.asarray(run()), np.asarray(one()))
    rows.append(row)
    print("ROW " + json.dumps(row), flush=True)
same = [float(np.mean(a == b)) for a, b in zip(toks["padded"], toks["masked"])]
with open(os.path.join(os.environ.get("OUT", "."), "decode_ab4.json"), "w") as f:
    json.dump({"rows": rows, "token_agreement_b64_b1": same}, f, indent=1)
print("| run | sample b64 ms | decode b1 ms/token |\n|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['sample_b64_ms']:.1f} | {r['decode_b1_ms_per_token']:.3f} |")
print("token agreement (b64, b1)", same)
