"""Scratch A/B (session 7, split variant added in session 8, "plain" in session 11): decode steps with XLA's attention vs the Pallas decode kernel, same process, the suite's
sender (random bf16 8B, per-layer, fused projections): b64 sampling (64 new tokens, top-p 0.95), b64 sampled-token
agreement, b1 greedy decode (128-token prompt, 129 new tokens, as the suite)."""
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
res, toks = {}, {}
order = sys.argv[1].split(",") if len(sys.argv) > 1 else ["auto", "pallas", "xla"]
from latentjax.models import decode_attention as da
for impl in order:
    # "pallas1": the kernel without the split over slot ranges (one program per row and kv head)
    da.TARGET_PROGRAMS = 1 if impl == "pallas1" else 128
    # "plain": auto attention compiled without generate's wide-batch options (session 11: per-compile split-K check)
    import latentjax.inference.generate as gen_mod
    gen_mod.WIDE_DECODE_BATCH = 10**9 if impl == "plain" else 64
    jax.clear_caches()
    c = cfg.replace(attention_impl={"pallas1": "pallas", "plain": "auto"}.get(impl, impl))
    try:
        run = lambda: generate(c, params, prompts, max_new_tokens=64, sampling=hot, rng=jax.random.key(0),
                               mesh=mesh, rules=rules).tokens
        t0 = time.perf_counter(); jax.block_until_ready(run()); res[f"{impl}_sample_first_s"] = time.perf_counter() - t0
        sec = suite.median_time(run, warm=1, reps=5)
        res[f"{impl}_sample_b64_ms"] = sec * 1e3
        res[f"{impl}_sample_tokens_per_s"] = 4096 / sec
        toks[impl] = np.asarray(run())  # same key: the sampled tokens agree where the logits do
        if os.environ.get("AB_SKIP_B1"):
            continue
        one = lambda: generate(c, params, prompt1, max_new_tokens=129, mesh=mesh, rules=rules).tokens
        jax.block_until_ready(one())
        res[f"{impl}_decode_b1_129tok_ms"] = suite.median_time(one, warm=1, reps=3) * 1e3
    except Exception as e:  # noqa: BLE001
        res[f"{impl}_error"] = f"{type(e).__name__}: {str(e)[:600]}"
        traceback.print_exc()
    print(json.dumps({k: v for k, v in res.items() if k.startswith(impl)}), flush=True)
if "pallas" in toks and "auto" in toks:
    a, b = toks["pallas"], toks["auto"]
    res["sampled_b64_first_token_equal"] = float(np.mean(a[:, 0] == b[:, 0]))
    res["sampled_b64_rows_identical_64"] = float(np.mean(np.all(a == b, axis=1)))
with open(os.path.join(os.environ.get("OUT", "."), "decode_ab.json"), "w") as f:
    json.dump(res, f, indent=1)
print("| impl | sample b64 ms | tokens/s | decode b1 129 tok ms |\n|---|---|---|---|")
for impl in order:
    print(f"| {impl} | {res.get(impl + '_sample_b64_ms', res.get(impl + '_error', ''))} | "
          f"{res.get(impl + '_sample_tokens_per_s', '')} | {res.get(impl + '_decode_b1_129tok_ms', '')} |")
try:
    faster = (res["pallas_sample_b64_ms"] < 0.99 * res["auto_sample_b64_ms"]
              and res["pallas_decode_b1_129tok_ms"] <= 1.01 * res["auto_decode_b1_129tok_ms"])
except KeyError:
    faster = False
if faster:
    open("/tmp/adopt_pallas", "w").write("1")
print("adopt pallas:", faster)
print("agreement", res.get("sampled_b64_first_token_equal"), res.get("sampled_b64_rows_identical_64"))
