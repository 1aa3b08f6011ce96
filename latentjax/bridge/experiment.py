"""`build(config, mesh) -> Experiment` for the Telepathy bridge (registry name "bridge").

Loads the frozen sender (only the layers below its tap are kept) and receiver, builds the task's examples and a
grain pipeline of bridge batches, optionally runs the calibration pass, and returns the loss, the trainable
initialiser (bridge params + calibration buffers), and an evaluation hook (quick evals during training, a larger
one at the last step). Config sections: `configs/telepathy/base.py`.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.bridge import batching
from latentjax.bridge.calibration import calibrate, with_calibration
from latentjax.bridge.evaluate import Evaluator, eval_dir, flat_metrics
from latentjax.bridge.forward import BridgedModel, SenderTap, resolve_layer, sender_params_for_tap
from latentjax.bridge.model import BridgeConfig, count_params, init_bridge, median_row_rms
from latentjax.data.pipeline import make_loader
from latentjax.data.transforms import Pad, PadBatch
from latentjax.models.model import from_pretrained
from latentjax.parallel import rules as rules_lib
from latentjax.tasks import get_task, select
from latentjax.train.experiment import Experiment

OUTPUT_SCALE_INITS = ("embedding_median_rms", "fixed")
NORMALIZERS = ("identity", "calibrate")


def task_from_config(config: ConfigDict):
    options = dict(config.task.options)
    if config.task.name == "banking77" and config.task.data_dir:
        options["data_dir"] = config.task.data_dir
    if "needle_depth" in options and options["needle_depth"] is not None and options["needle_depth"] < 0:
        options["needle_depth"] = None  # configs use -1 for "a random depth per example"
    return get_task(config.task.name, **options)


def frozen_load_options(model: ConfigDict) -> dict:
    """How a config's frozen models are loaded: attention implementation, fused projections, folded norm scales."""
    return dict(attention_impl=model.get("attention_impl", "auto"),
                fused_projections=bool(model.get("fused_projections", False)),
                folded_norms=bool(model.get("folded_norms", False)))


def load_models(config: ConfigDict, mesh: Mesh, rules) -> tuple[Any, Any]:
    m = config.model
    common = dict(mesh=mesh, rules=rules, **frozen_load_options(m))
    sender = from_pretrained(m.sender.path, dtype=m.sender.dtype, **common)
    receiver = from_pretrained(m.receiver.path, dtype=m.receiver.dtype, remat_policy=m.remat_policy, **common)
    return sender, receiver


def bridge_config(config: ConfigDict, sender_cfg, receiver_cfg, receiver_params) -> BridgeConfig:
    b = config.bridge
    if b.output_scale not in OUTPUT_SCALE_INITS:
        raise ValueError(f"bridge.output_scale must be one of {OUTPUT_SCALE_INITS}, got {b.output_scale!r}.")
    if b.normalizer.mode not in NORMALIZERS:
        raise ValueError(f"bridge.normalizer.mode must be one of {NORMALIZERS}, got {b.normalizer.mode!r}.")
    scale = (median_row_rms(receiver_params["embed_tokens"]["embedding"]) if b.output_scale == "embedding_median_rms"
             else float(b.output_scale_value))
    return BridgeConfig(sender_dim=sender_cfg.hidden_size, receiver_dim=receiver_cfg.hidden_size,
                        num_latents=int(b.num_latents), depth=int(b.depth), num_heads=int(b.num_heads),
                        width=int(b.width) or None, mlp_ratio=int(b.mlp_ratio),
                        fsq_levels=tuple(int(x) for x in b.fsq_levels), output_scale_init=scale,
                        calibrated=b.normalizer.mode == "calibrate",
                        dtype=config.train.compute_dtype or "float32", param_dtype="float32")


def calibration_batches(examples, sender_tok, receiver_tok, max_tokens: int, batch_size: int):
    """The sender prompts (left-padded, with special tokens) and the same texts in the receiver's tokenizer."""
    batch_fn = PadBatch(pad=[
        Pad(batching.buckets(batching.SENDER_BUCKET, max_tokens), pad_id=sender_tok.pad_token_id, side="left",
            prefix="sender_"),
        Pad(batching.buckets(batching.SENDER_BUCKET, max_tokens), pad_id=receiver_tok.pad_token_id or 0,
            prefix="text_")])
    for start in range(0, len(examples), batch_size):
        rows = [{"sender_input_ids": np.asarray(batching.token_ids(sender_tok, ex["sender_text"], True, max_tokens),
                                                np.int32),
                 "text_input_ids": np.asarray(batching.token_ids(receiver_tok, ex["sender_text"], False, max_tokens),
                                              np.int32)} for ex in examples[start:start + batch_size]]
        batch = batch_fn(rows)
        yield {k: batch[k] for k in ("sender_input_ids", "sender_attention_mask", "text_input_ids",
                                     "text_attention_mask")}


def decay_mask_fn(mode: str):
    """Weight decay on every bridge parameter (the reference's torch AdamW) or on matrices only; never on the
    calibration buffers."""
    if mode not in ("all", "matrices"):
        raise ValueError(f"bridge.weight_decay_on must be 'all' or 'matrices', got {mode!r}.")

    def mask(tree):
        return {k: jax.tree.map(lambda p: k == "params" and (mode == "all" or p.ndim >= 2), v)
                for k, v in tree.items()}
    return mask


def build(config: ConfigDict, mesh: Mesh) -> Experiment:
    rules = rules_lib.rules_from_config(dict(config.mesh.rules))
    task = task_from_config(config)
    sender, receiver = load_models(config, mesh, rules)
    layer = resolve_layer(int(config.model.sender.layer), sender.config.num_layers)
    cfg = bridge_config(config, sender.config, receiver.config, receiver.params)
    model = BridgedModel(tap=SenderTap.make(sender.config, layer), bridge=cfg, receiver=receiver.config,
                         diversity_weight=float(config.loss.diversity_weight))
    frozen = {"sender": sender_params_for_tap(sender.config, sender.params, layer), "receiver": receiver.params}
    sender.params = None  # only the layers below the tap are kept (in frozen["sender"])
    s_tok, r_tok = sender.tokenizer, receiver.tokenizer
    data_dir = config.task.data_dir or None

    train_examples = task.examples(task.train_split, data_dir)
    if int(config.task.train_limit):
        train_examples = train_examples[: int(config.task.train_limit)]

    stats = None
    if cfg.calibrated:
        norm = config.bridge.normalizer
        sample = random.Random(int(norm.seed)).sample(train_examples, min(int(norm.num_samples), len(train_examples)))
        with rules_lib.activate(mesh, rules):
            stats = calibrate(model, frozen, calibration_batches(sample, s_tok, r_tok, task.sender_max_tokens,
                                                                 int(norm.batch_size)), norm.pooling)
        logging.info("Calibration on %d prompts: sender mean |mu| %.4g, mean sigma %.4g; receiver mean sigma %.4g.",
                     len(sample), np.abs(stats["sender_mean"]).mean(), stats["sender_std"].mean(),
                     stats["receiver_std"].mean())

    def init_trainable(rng):
        variables = init_bridge(cfg, rng)
        return with_calibration(variables, stats) if stats is not None else variables

    num_params = count_params(jax.eval_shape(init_trainable, jax.random.PRNGKey(0))["params"])
    logging.info("Bridge: %s trainable parameters (closed form %s), K=%d, width %d, sender layer %d of %d.",
                 f"{num_params:,}", f"{cfg.num_params:,}", cfg.num_latents, cfg.inner, layer,
                 sender.config.num_layers)

    encoder = batching.EncodeExample(s_tok, r_tok, task.primer, cfg.num_latents, task.sender_max_tokens,
                                     task.answer_eos)
    loader = make_loader(train_examples, int(config.train.batch_size), int(config.data.shuffle_seed),
                         transforms=[encoder], worker_count=int(config.data.worker_count),
                         batch_fn=batching.pad_batch(s_tok.pad_token_id, r_tok.pad_token_id or 0,
                                                     task.sender_max_tokens))

    ecfg = config.eval
    eval_examples = task.examples(ecfg.split or task.eval_split, data_dir)

    def evaluator(num: int) -> Evaluator:
        chosen = select(eval_examples, num or None, ecfg.subset, int(ecfg.seed))
        return Evaluator(model, task, chosen, s_tok, r_tok, batch_size=int(ecfg.batch_size),
                         max_new_tokens=int(ecfg.max_new_tokens), generate=bool(ecfg.generate),
                         label_scoring=bool(ecfg.label_scoring), label_chunk=int(ecfg.label_chunk), mesh=mesh,
                         rules=rules)

    evaluators: dict = {}

    def eval_fn(trainable, step: int) -> dict:
        final = step >= int(config.train.steps)
        num = int(ecfg.final_num_samples if final else ecfg.num_samples)
        if num not in evaluators:
            evaluators[num] = evaluator(num)
        out_dir = eval_dir(ecfg.output_dir, step) if ecfg.output_dir else None
        name = f"{task.name}_{'final' if final else 'quick'}"
        summary, _ = evaluators[num].evaluate(trainable, frozen, out_dir, name=name)
        return {**flat_metrics(summary), "n": summary["n"]}

    fingerprint = {
        "experiment": "bridge", "task": task.name, "sender": config.model.sender.path, "sender_layer": layer,
        "receiver": config.model.receiver.path, "bridge_num_params": num_params,
        "bridge": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dtype", "output_scale_init")},
        "normalizer": dict(config.bridge.normalizer) if cfg.calibrated else "identity",
    }
    return Experiment(init_trainable=init_trainable, frozen=frozen, loss_fn=model.loss, train_data=loader,
                      batch_axes=batching.BATCH_AXES, eval_fn=eval_fn, fingerprint=fingerprint,
                      decay_mask=decay_mask_fn(config.bridge.weight_decay_on))


__all__ = ["build", "bridge_config", "calibration_batches", "decay_mask_fn", "load_models",
           "task_from_config"]
