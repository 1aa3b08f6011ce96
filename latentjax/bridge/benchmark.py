"""Time the bridged train step and the evaluation path at the reference's shapes, with random weights.

Sender: Llama-3.1-8B shape tapped at layer 31 (31 blocks run); receiver: Mistral-7B-v0.3 shape; bridge width 4096,
depth 2, 8 heads (~537 M parameters at K=8); both LLMs in bf16, the bridge float32 (the shared loop's step:
AdamW, clipping, in-step gradient accumulation).

    python -m latentjax.bridge.benchmark --batch 64 --grad_accum 4 --sender_len 64 --steps 10
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from latentjax.bridge.batching import BATCH_AXES
from latentjax.bridge.forward import BridgedModel, SenderTap
from latentjax.bridge.model import BridgeConfig, count_params, init_bridge
from latentjax.models.config import from_hf_dict
from latentjax.models.model import init_params
from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import make_mesh

LLAMA31_8B = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=4096,
                  intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192), bos_token_id=128000,
                  eos_token_id=[128001, 128008, 128009])
MISTRAL_7B_V03 = dict(model_type="mistral", architectures=["MistralForCausalLM"], vocab_size=32768, hidden_size=4096,
                      intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, rms_norm_eps=1e-5, rope_theta=1000000.0, max_position_embeddings=32768,
                      sliding_window=None, bos_token_id=1, eos_token_id=2)


def synthetic_batch(rng: np.random.Generator, batch: int, sender_len: int, primer: int, k: int, answer: int) -> dict:
    r_len = -(-(primer + k + answer) // 8) * 8
    recv = rng.integers(3, 32768, (batch, r_len)).astype(np.int32)
    loss = np.zeros((batch, r_len), np.int32)
    loss[:, primer + k:primer + k + answer] = 1
    mask = np.zeros((batch, r_len), np.int32)
    mask[:, :primer + k + answer] = 1
    return {"sender_input_ids": rng.integers(3, 128256, (batch, sender_len)).astype(np.int32),
            "sender_attention_mask": np.ones((batch, sender_len), np.int32), "receiver_input_ids": recv,
            "receiver_attention_mask": mask, "receiver_loss_mask": loss,
            "soft_start": np.full((batch,), primer, np.int32)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--grad_accum", type=int, default=4)
    p.add_argument("--sender_len", type=int, default=64)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--layer", type=int, default=31)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--remat", default="minimal")
    p.add_argument("--attention", default="auto")
    p.add_argument("--eval_batch", type=int, default=16)
    args = p.parse_args()

    from latentjax.inference.generate import decoder_apply, generate
    from latentjax.train import state as state_lib
    from latentjax.train.optimizer import make_optimizer
    from latentjax.train.step import command_buffer_options, make_train_step

    mesh = make_mesh((-1, 1, 1))
    rules = rules_lib.DEFAULT_RULES
    common = dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl=args.attention)
    sender_cfg = from_hf_dict(LLAMA31_8B, **common)
    receiver_cfg = from_hf_dict(MISTRAL_7B_V03, remat_policy=args.remat, **common)
    tap = SenderTap.make(sender_cfg, args.layer)
    t0 = time.perf_counter()
    frozen = {"sender": init_params(tap.config, jax.random.PRNGKey(1), mesh, rules),
              "receiver": init_params(receiver_cfg, jax.random.PRNGKey(2), mesh, rules)}
    frozen["sender"].pop("lm_head", None)
    jax.block_until_ready(frozen)
    init_s = time.perf_counter() - t0
    cfg = BridgeConfig(sender_dim=4096, receiver_dim=4096, num_latents=args.tokens, width=args.width or None,
                       output_scale_init=0.0027)
    model = BridgedModel(tap, cfg, receiver_cfg, diversity_weight=0.1)
    opt = ConfigDict(dict(lr=2e-4, warmup_steps=0, decay="constant", end_lr_ratio=1.0, b1=0.9, b2=0.999, eps=1e-8,
                          weight_decay=0.01, clip_norm=1.0))
    optimizer, schedule = make_optimizer(opt, args.steps)

    def init_trainable(rng):
        return init_bridge(cfg, rng)

    shardings = state_lib.state_shardings(init_trainable, optimizer, mesh, rules)
    state = state_lib.init_state(init_trainable, optimizer, 0, shardings, mesh, rules)
    step = make_train_step(model.loss, optimizer, mesh, rules, shardings, BATCH_AXES, args.grad_accum,
                           learning_rate_fn=schedule, compiler_options=command_buffer_options())
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(rng, args.batch, args.sender_len, 3, args.tokens, 3) for _ in range(2)]
    t0 = time.perf_counter()
    state, m = step(state, frozen, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    state, m = step(state, frozen, batches[1])
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(args.steps):
        state, m = step(state, frozen, batches[i % 2])
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / args.steps

    # Evaluation path: prompt embeddings, 5 greedy tokens, label scoring over 2 labels.
    eb = synthetic_batch(rng, args.eval_batch, args.sender_len, 3, args.tokens, 3)
    primer = jnp.asarray(eb["receiver_input_ids"][0, :3])
    prompt = jax.jit(model.prompt_embeds)
    scores = jax.jit(model.label_scores)
    labels, lmask = jnp.asarray(eb["receiver_input_ids"][:2, :4]), jnp.ones((2, 4), jnp.int32)
    apply_fn = decoder_apply(receiver_cfg)

    def eval_once():
        with rules_lib.activate(mesh, rules):
            prefix = prompt(state.params, frozen, eb["sender_input_ids"], eb["sender_attention_mask"], primer)
            s = scores(frozen, prefix, labels, lmask)
        out = generate(receiver_cfg, frozen["receiver"], inputs_embeds=prefix, max_new_tokens=5, mesh=mesh,
                       stop_token_ids=(), apply_fn=apply_fn, rules=rules)
        return jax.block_until_ready((s, out.tokens))

    eval_once()
    t0 = time.perf_counter()
    for _ in range(3):
        eval_once()
    eval_s = (time.perf_counter() - t0) / 3
    mem = jax.devices()[0].memory_stats() or {}
    print(json.dumps({
        "device": jax.devices()[0].device_kind, "bridge_params": count_params(state.params["params"]),
        "batch": args.batch, "grad_accum": args.grad_accum, "sender_len": args.sender_len, "tokens": args.tokens,
        "sender_layers_run": tap.config.num_layers, "init_s": round(init_s, 2), "compile_s": round(compile_s, 2),
        "step_s": round(step_s, 4), "examples_per_s": round(args.batch / step_s, 1),
        "eval_batch": args.eval_batch, "eval_batch_s": round(eval_s, 4),
        "loss": float(m["loss"]), "peak_gib": round(mem.get("peak_bytes_in_use", 0) / 2**30, 2)}, indent=1))


if __name__ == "__main__":
    main()
