"""Scratch A/B (session 9): greedy decode at small batches with "auto"'s new choice (the Pallas kernel below
batch x kv heads = 128) against the old one (XLA's attention), same process, the suite's sender (random bf16 8B,
per-layer, fused projections); 128-token prompts, 129 new tokens, prefill included, median of 3."""
import json, os, sys
sys.path.insert(0, "benchmarks")
import suite
import jax, jax.numpy as jnp, numpy as np
from latentjax.inference.generate import generate
from latentjax.models import decoder
from latentjax.models.config import from_hf_dict
from latentjax.models.model import fuse_projections, unstack_layers
from latentjax.parallel import rules as rules_lib

mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
shape, _ = suite.shapes()
cfg, params = unstack_layers(*suite._init(from_hf_dict(shape, dtype="bfloat16", param_dtype="bfloat16",
                                                       attention_impl="auto"), 1, mesh, rules))
cfg, params = fuse_projections(cfg, params)
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
