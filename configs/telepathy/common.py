"""Sections shared by the Telepathy bridge configs (experiment "bridge", latentjax/bridge/experiment.py).

Each task file calls `bridge_config(...)` with the seed's hyperparameters for that task (telepathy_reference.md
§1.4, §4.3, §4.4) and accepts a variant argument of comma-separated `key=value` pairs, e.g.
`--config=configs/telepathy/banking77.py:tokens=64` or `...sst2.py:protocol=guide,layer=16`:
  tokens=K          soft tokens (the token ablation: 16/32/64/128)
  layer=L           sender tap (HF hidden_states index; negative counts from the end)
  protocol=P        `headline` (the runs behind the reported numbers) or `guide` (the reproducibility guide)
  steps=N, lr=X, batch=B, seed=S
"""
from __future__ import annotations

from ml_collections import ConfigDict

from configs import base
from latentjax.bridge.baselines import baseline_section
from latentjax.train.step import FROZEN_PAIR_COMMAND_BUFFERS

SENDER = "meta-llama/Llama-3.1-8B-Instruct"  # an HF folder path is needed: override --config.model.sender.path
RECEIVER = "mistralai/Mistral-7B-Instruct-v0.3"


def parse_arg(arg) -> dict:
    """'tokens=16,layer=31' -> {"tokens": "16", "layer": "31"}."""
    if not arg:
        return {}
    out = {}
    for part in str(arg).split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"Config variant {part!r} is not key=value (e.g. tokens=16).")
        out[key.strip()] = value.strip()
    return out


def bridge_section(num_latents=8, output_scale="embedding_median_rms", output_scale_value=0.03) -> ConfigDict:
    """Bridge shape (reference v15: depth 2, 8 heads, width = receiver hidden size) and its normalizer.
    width=0 means the receiver's hidden size; fsq_levels=() disables the FSQ bottleneck."""
    return ConfigDict(dict(
        num_latents=int(num_latents), depth=2, num_heads=8, width=0, mlp_ratio=4, fsq_levels=(),
        output_scale=output_scale, output_scale_value=float(output_scale_value),
        weight_decay_on="all",  # the reference's torch AdamW decays every bridge parameter
        normalizer=ConfigDict(dict(mode="identity", num_samples=500, batch_size=8, pooling="token", seed=0)),
    ))


def eval_section(num_samples=50, final_num_samples=200, max_new_tokens=0) -> ConfigDict:
    """Quick evals of num_samples every eval_every steps, final_num_samples at the last step (0 = the whole
    split); subset first | stratified | random | all; max_new_tokens 0 = the task's (reference) default;
    output_dir "" = no per-example files."""
    return ConfigDict(dict(split="", num_samples=int(num_samples), final_num_samples=int(final_num_samples),
                           subset="first", seed=0, batch_size=16, max_new_tokens=int(max_new_tokens),
                           generate=True, label_scoring=True, label_chunk=16, output_dir=""))


def bridge_config(task: str, *, steps: int, batch_size: int, grad_accum: int, lr: float, num_latents: int,
                  layer: int = 31, output_scale="embedding_median_rms", eval_every=200, num_samples=50,
                  final_num_samples=200, task_options=None, arg=None) -> ConfigDict:
    variant = parse_arg(arg)
    unknown = set(variant) - {"tokens", "layer", "protocol", "steps", "lr", "batch", "seed"}
    if unknown:
        raise ValueError(f"Unknown config variant keys {sorted(unknown)}; known: tokens, layer, protocol, steps, lr, "
                         "batch, seed.")
    if variant.get("protocol", "headline") == "guide":  # the reproducibility guide: 1 GPU, batch 8, lr 1e-4
        batch_size, grad_accum, lr = 8, 1, 1e-4
    elif variant.get("protocol", "headline") != "headline":
        raise ValueError("protocol must be 'headline' or 'guide'.")
    num_latents = int(variant.get("tokens", num_latents))
    config = base.get_config()
    config.experiment = "bridge"
    config.seed = int(variant.get("seed", 0))
    config.model = base.model_pair(SENDER, RECEIVER, dtype="bfloat16")
    config.model.sender.layer = int(variant.get("layer", layer))
    config.task = ConfigDict(dict(name=task, data_dir="", train_limit=0, options=ConfigDict(task_options or {})))
    config.bridge = bridge_section(num_latents, output_scale)
    config.loss = ConfigDict(dict(diversity_weight=0.1))
    config.train = base.train(steps=int(variant.get("steps", steps)), batch_size=int(variant.get("batch", batch_size)),
                              grad_accum=grad_accum, compute_dtype="",  # float32 bridge (reference: bf16)
                              xla_command_buffers=FROZEN_PAIR_COMMAND_BUFFERS)
    config.optimizer = base.optimizer(lr=float(variant.get("lr", lr)), warmup_steps=0, decay="constant")
    config.data.shuffle_seed = config.seed
    config.eval = eval_section(num_samples, final_num_samples)
    config.baseline = baseline_section()  # text baselines (launch/telepathy_baseline.py) on config.eval's rows
    config.eval_every = int(eval_every)
    config.checkpoint = base.checkpoint(every=500, keep_last=2, keep_best=1,
                                        best_metric="eval/label_scoring_accuracy", best_mode="max")
    config.logging = base.logging(log_every=50)
    return config
