"""Scratch A/B (session 9): greedy decode at batch 1 and 8 with the Pallas kernel (AUTO_DECODE_KERNEL_BELOW at 128,
so batch 8 takes it too) against XLA's attention (0), same process, the suite's sender (random bf16 8B, per-layer,
fused projections); 128-token prompts, 129 new tokens, prefill included, median of 3."""
import json, os, sys
sys.path.insert(0, "benchmarks")
import suite
import jax, jax.numpy as jnp, numpy as np
from latentjax.inference.generate import generate
from latentjax.models import decoder

cfg, params, mesh, rules = suite.decode_sender()
rs = np.random.RandomState(0)
res, toks = {}, {}
for batch in (1, 8):
    prompt = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (batch, 128)), jnp.int32)
    for name, below in (("kernel", 128), ("xla", 0), ("kernel2", 128))[:int(os.environ.get("VARIANTS", 3))]:
        decoder.AUTO_DECODE_KERNEL_BELOW = below
        jax.clear_caches()
        run = lambda: generate(cfg, params, prompt, max_new_tokens=129, mesh=mesh, rules=rules).tokens
        toks[name] = np.asarray(run())
        res[f"b{batch}_{name}_ms"] = round(suite.median_time(run, warm=1, reps=3) * 1e3, 2)
    res[f"b{batch}_greedy_tokens_equal"] = float(np.mean(toks["kernel"] == toks["xla"]))
    print(json.dumps({k: v for k, v in res.items() if k.startswith(f"b{batch}_")}), flush=True)
with open(os.path.join(os.environ.get("OUT", "."), "decode_small_batch.json"), "w") as f:
    json.dump(res, f, indent=1)
print("| batch | kernel ms | XLA ms | kernel again ms | greedy tokens equal |\n|---|---|---|---|---|")
for b in (1, 8):
    print(f"| {b} | {res[f'b{b}_kernel_ms']} | {res[f'b{b}_xla_ms']} | {res.get(f'b{b}_kernel2_ms')} | "
          f"{res[f'b{b}_greedy_tokens_equal']} |")
