"""Sections shared by the GSM8K translator configs (experiment "translator", latentjax/translator/experiment.py).

`translator_config(direction, ...)` returns a full config for `mistral_to_llama` (Phase 1) or `llama_to_mistral`
(Phase 2) with the spec's defaults (shared/spec/translator.md): last-layer source states, AdamW lr 3e-4, warmup
100, 2000 steps, batch 2, bf16, loss weights nll 1 / kl 0.03 (20 tokens) / prompt_alignment 0.001 / info_nce 0.05
/ format 0.1 / dit_flow 0.1, 8-shot evaluation with greedy decoding up to 256 tokens. Values the spec does not
state are marked "unverified" below. Every file accepts a variant argument of comma-separated key=value pairs:
  kind=cross|dit  mode=soft_plus_text|soft_only  teacher=answer|prompt  tokens=K  curriculum=N (soft_only from
  step N)  context=mode|reference  positions=shifted|text_first  steps=N  lr=X  batch=B  seed=S
e.g. `--config=configs/translator/llama_to_mistral.py:kind=cross,mode=soft_only`. Model paths must point at HF
folders: `--config.model.sender.path=/models/llama --config.model.receiver.path=/models/mistral`; per-example
JSONL dumps need `--config.eval.output_dir=$WORKDIR/eval`.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from configs import base
from configs.telepathy.common import parse_arg
from latentjax.train.step import FROZEN_PAIR_COMMAND_BUFFERS

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
DIRECTIONS = {"mistral_to_llama": (MISTRAL, LLAMA), "llama_to_mistral": (LLAMA, MISTRAL)}
VARIANT_KEYS = ("kind", "mode", "teacher", "tokens", "curriculum", "context", "positions", "steps", "lr", "batch",
                "seed")


def translator_section(kind="dit", num_tokens=64, mode="soft_plus_text", teacher="answer") -> ConfigDict:
    """kind cross|dit; mode soft_plus_text|soft_only; soft_only_curriculum_steps > 0 switches to soft_only at
    that step (train and eval); train_context mode (the mode's context, the same text in training rows and in
    evaluation) or reference (soft tokens alone before the solution and before generation: the reference's
    training input; soft_only only); teacher answer|prompt (DiT endpoint, token alignment);
    positions shifted (reference) | text_first (extension)."""
    return ConfigDict(dict(
        kind=kind, num_tokens=int(num_tokens),  # K = 64: unverified (the spec does not state K)
        mode=mode, soft_only_curriculum_steps=0, train_context="mode", teacher=teacher, positions="shifted",
        cross=ConfigDict(dict(width=1024, depth=2, num_heads=8, dropout=0.1)),
        dit=ConfigDict(dict(width=512, depth=6, num_heads=8, cond_width=512, time_dim=256, mlp_ratio=4,
                            pooling="mean", align=True, train_steps=2, eval_steps=4, train_output="x0_hat",
                            cfg_scale=0.0, cfg_dropout=0.1)),
    ))


def loss_section(**overrides) -> ConfigDict:
    """Weights of latentjax.translator.forward.LossWeights (0 switches a term off; it is still logged)."""
    weights = dict(nll=1.0, kl=0.03, rope_alignment=0.0, prompt_alignment=0.001, info_nce=0.05, prompt_contrast=0.0,
                   aux_probe=0.0, format=0.1, token_alignment=0.0, dit_flow=0.1, kl_tokens=20,
                   kl_warmup_steps=100,  # unverified: the spec says "after warmup"; we use the lr warmup
                   temperature=0.07)
    weights.update(overrides)
    return ConfigDict(weights)


def eval_section(num_samples=200, final_num_samples=200) -> ConfigDict:
    """num_samples items of the test split every eval_every steps, final_num_samples at the last step (0 = all
    1,319); few_shot exemplars drawn once with few_shot_seed; sender_few_shot: the source reads the few-shot
    evaluation prompt (else the training prompt; the spec does not say which the reference fed it);
    baselines = target-alone (and source_alone) accuracy on the same items, computed once."""
    return ConfigDict(dict(split="test", num_samples=int(num_samples), final_num_samples=int(final_num_samples),
                           batch_size=8, max_new_tokens=256, few_shot=8, few_shot_seed=42, seed=0,
                           sender_max_tokens=2048, sender_few_shot=True, baselines=True, source_alone=True,
                           output_dir=""))


def translator_config(direction: str, *, kind="dit", mode="soft_plus_text", teacher="answer", arg=None,
                      loss=None) -> ConfigDict:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}.")
    variant = parse_arg(arg)
    unknown = set(variant) - set(VARIANT_KEYS)
    if unknown:
        raise ValueError(f"Unknown config variant keys {sorted(unknown)}; known: {', '.join(VARIANT_KEYS)}.")
    sender, receiver = DIRECTIONS[direction]
    config = base.get_config()
    config.experiment = "translator"
    config.seed = int(variant.get("seed", 0))
    config.model = base.model_pair(sender, receiver, dtype="bfloat16")
    config.model.sender.layer = -1  # the source's last layer (HF hidden_states[-1])
    config.translator = translator_section(variant.get("kind", kind), int(variant.get("tokens", 64)),
                                           variant.get("mode", mode), variant.get("teacher", teacher))
    config.translator.soft_only_curriculum_steps = int(variant.get("curriculum", 0))
    config.translator.train_context = variant.get("context", "mode")
    config.translator.positions = variant.get("positions", "shifted")
    config.loss = loss_section(**(loss or {}))
    config.train = base.train(steps=int(variant.get("steps", 2000)), batch_size=int(variant.get("batch", 2)),
                              compute_dtype="bfloat16", xla_command_buffers=FROZEN_PAIR_COMMAND_BUFFERS)
    config.optimizer = base.optimizer(lr=float(variant.get("lr", 3e-4)), warmup_steps=100,
                                      decay="cosine")  # decay: unverified
    config.data = base.data(name="gsm8k")
    config.data.shuffle_seed = config.seed
    config.data.train_limit = 0
    config.data.sender_max_tokens = 512
    config.data.receiver_max_tokens = 1024
    config.data.fixed_lengths = False  # True: every batch padded to the max lengths (one compiled step shape)
    config.eval = eval_section()
    config.eval_every = 250
    config.checkpoint = base.checkpoint(every=250, keep_last=2, keep_best=1, best_metric="eval/accuracy",
                                        best_mode="max")
    config.logging = base.logging(log_every=10)
    return config
