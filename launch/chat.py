"""Chat with a Llama/Mistral checkpoint through latentjax (default: the offline SmolLM2-135M-Instruct).

    python launch/chat.py "What is the capital of France?" "Name a prime number."
    python launch/chat.py --model /path/to/hf_folder --dtype bfloat16 --temperature 0.7 "Hello"
"""
from __future__ import annotations

import argparse
import time

import jax

import latentjax
from latentjax.inference.generate import generate_text
from latentjax.inference.sampling import SamplingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate chat replies with latentjax.")
    parser.add_argument("prompts", nargs="*", default=["What is the capital of France?"])
    parser.add_argument("--model", default=None, help="HF model folder (default: offline SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model is None:
        from latentjax.convert.gguf import smollm2_path

        args.model = smollm2_path()
    start = time.perf_counter()
    model = latentjax.from_pretrained(args.model, dtype=args.dtype)
    print(f"loaded {args.model} ({model.config.num_params / 1e6:.0f}M params, {jax.devices()[0].platform}) "
          f"in {time.perf_counter() - start:.1f}s")
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p)
    start = time.perf_counter()
    replies = generate_text(model, args.prompts, max_new_tokens=args.max_new_tokens, sampling=sampling,
                            rng=jax.random.key(args.seed))
    elapsed = time.perf_counter() - start
    for prompt, reply in zip(args.prompts, replies):
        print(f"\n>>> {prompt}\n{reply}")
    print(f"\n{len(replies)} replies in {elapsed:.1f}s (compile included)")


if __name__ == "__main__":
    main()
