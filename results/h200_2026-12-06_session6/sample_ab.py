"""Scratch A/B (not part of the repo): b64 sampling with the rejection sampler vs session 5's radix filter, greedy
as the floor of the sampling cost; the suite's sender (random bf16 8B, per-layer, fused projections)."""
import json, os, sys, time
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".devcarry")
import suite, old_sampling
import jax, jax.numpy as jnp, numpy as np
from latentjax.inference import generate as gen_lib
from latentjax.inference.sampling import SamplingConfig
from latentjax.models.config import from_hf_dict
from latentjax.models.model import fuse_projections, unstack_layers
from latentjax.parallel import rules as rules_lib

tag = sys.argv[1]
only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
shape, _ = suite.shapes()
cfg, params = unstack_layers(*suite._init(from_hf_dict(shape, dtype="bfloat16", param_dtype="bfloat16",
                                                       attention_impl="auto"), 1, mesh, rules))
cfg, params = fuse_projections(cfg, params)
rs = np.random.RandomState(0)
prompts = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (64, 64)), jnp.int32)
res = {"tag": tag}
new_sample = gen_lib.sample
for name, sc, fn in [("rejection", SamplingConfig(temperature=1.0, top_p=0.95), new_sample),
                     ("radix", SamplingConfig(temperature=1.0, top_p=0.9500001), old_sampling.sample),
                     ("greedy", SamplingConfig(), new_sample),
                     ("rejection_again", SamplingConfig(temperature=1.0, top_p=0.9500002), new_sample)]:
    if only and name not in only:
        continue
    gen_lib.sample = fn
    run = lambda: generate_tokens(sc)
    def generate_tokens(sc):
        return gen_lib.generate(cfg, params, prompts, max_new_tokens=64, sampling=sc, rng=jax.random.key(0),
                                mesh=mesh, rules=rules).tokens
    t0 = time.perf_counter(); jax.block_until_ready(run()); res[f"{name}_first_s"] = time.perf_counter() - t0
    sec = suite.median_time(run, warm=1, reps=5)
    res[f"{name}_ms"] = sec * 1e3
    res[f"{name}_tokens_per_s"] = 64 * 64 / sec
    toks = np.asarray(run())
    res[f"{name}_distinct_tokens"] = int(len(np.unique(toks)))
    print(json.dumps({k: v for k, v in res.items() if k.startswith(name)}), flush=True)
gen_lib.sample = new_sample
one = suite.median_time(lambda: gen_lib.generate(cfg, params, prompts, max_new_tokens=1, sampling=SamplingConfig(
    temperature=1.0, top_p=0.95), rng=jax.random.key(0), mesh=mesh, rules=rules).tokens, warm=1, reps=5)
res["prefill_plus_one_token_ms"] = one * 1e3
out = os.environ.get("OUT", ".")
with open(os.path.join(out, f"sample_ab_{tag}.json"), "w") as f:
    json.dump(res, f, indent=1)
print("RESULT", json.dumps(res), flush=True)
