"""GPU benchmark: the subliminal generation phase's sampler at the Llama-3.1-8B shape (random bf16 weights).

    python benchmarks/subliminal_generate.py --out $OUT                  # batches 64 and 256
    python benchmarks/subliminal_generate.py --tiny                      # CPU dry run of the script

Real paper-design prompts (latentjax.subliminal.numbers) rendered with SmolLM2's chat template give realistic
prompt lengths (ids < the 8B vocabulary); sampling at temperature 1.0, top-p 0.95, 64 new tokens, no stop token,
so every row generates all 64 tokens: the reference setting (transformers `generate` on an H100: about 1,400
tokens/s at batch 64). Runs `generate_phase.generate_samples` itself (batching, decoding, filtering, JSONL
writing included) and reports its tokens/s after the first (compiling) batch, plus the bare `generate` call time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

REFERENCE_TOKENS_PER_S = {64: 1400.0}  # PyTorch transformers generate, H100, 8B shape (issue 7)


def shape_config(tiny: bool):
    from latentjax.models.config import DecoderConfig, RopeConfig

    if tiny:
        return DecoderConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=16, rope=RopeConfig(theta=10000.0), dtype="float32",
                             param_dtype="float32", remat_policy="none")
    return DecoderConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
        head_dim=128, rope=RopeConfig(theta=500000.0, rope_type="llama3", factor=8.0), dtype="bfloat16",
        param_dtype="bfloat16", remat_policy="none")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--num_batches", type=int, default=4, help="timed batches after the first, per size")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import jax

    from latentjax.convert.gguf import smollm2_path
    from latentjax.inference.generate import generate
    from latentjax.inference.sampling import SamplingConfig
    from latentjax.models.model import init_params, load_tokenizer
    from latentjax.parallel import rules as rules_lib
    from latentjax.subliminal import generate_phase as gp
    from latentjax.subliminal import numbers

    config = shape_config(args.tiny)
    mesh = rules_lib.single_device_mesh()
    t0 = time.perf_counter()
    params = init_params(config, jax.random.key(0), mesh)
    jax.block_until_ready(params)
    print(f"init {time.perf_counter() - t0:.1f}s on {jax.devices()[0].device_kind}", file=sys.stderr)
    tok = load_tokenizer(smollm2_path(), config)
    sampler = gp.Sampler(config, params, tok, mesh, rules_lib.DEFAULT_RULES)
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = numbers.paper_prompts(batch * (args.num_batches + 1), seed=0)
        texts = gp.render_prompts(tok, [p["prompt"] for p in prompts[:batch]], True)
        ids, mask = gp.encode_left_padded(tok, texts, batch, True)
        sampling = SamplingConfig(temperature=1.0, top_p=0.95)
        # bare generate: compile, then time
        call = lambda k: generate(config, params, ids, mask, max_new_tokens=args.max_new_tokens,  # noqa: E731
                                  sampling=sampling, stop_token_ids=(), pad_token_id=0, rng=jax.random.key(k),
                                  mesh=mesh)
        jax.block_until_ready(call(0).tokens)
        times = []
        for k in range(1, 4):
            t = time.perf_counter()
            jax.block_until_ready(call(k).tokens)
            times.append(time.perf_counter() - t)
        bare = batch * args.max_new_tokens / min(times)
        # the phase's loop (tokenize, sample, decode, filter, write); stop ids = none of the vocabulary's
        with tempfile.TemporaryDirectory() as d:
            original = gp.stop_token_ids
            gp.stop_token_ids = lambda s: [config.vocab_size + 1]  # never sampled: full 64 tokens per row
            try:
                stats = gp.generate_samples(sampler, prompts, os.path.join(d, "samples.jsonl"),
                                            filter_fn=numbers.make_filter("paper"), target=len(prompts),
                                            batch_size=batch, max_new_tokens=args.max_new_tokens, temperature=1.0,
                                            top_p=0.95, seed=0, chat=True, progress=False)
            finally:
                gp.stop_token_ids = original
        row = {"batch": batch, "prompt_len": int(ids.shape[1]), "new_tokens": args.max_new_tokens,
               "generate_tokens_per_s": bare, "generate_s": min(times),
               "phase_tokens_per_s": stats["tokens_per_s_after_first_batch"],
               "reference_tokens_per_s": REFERENCE_TOKENS_PER_S.get(batch),
               "device": jax.devices()[0].device_kind}
        results.append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "subliminal_generate.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| batch | prompt len | generate tok/s | phase tok/s | PyTorch ref tok/s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['prompt_len']} | {r['generate_tokens_per_s']:.0f} | "
              f"{r['phase_tokens_per_s'] or float('nan'):.0f} | {r['reference_tokens_per_s'] or '-'} |")


if __name__ == "__main__":
    main()
