"""`build(config, mesh) -> Experiment` for the GSM8K translator (registry name "translator").

Loads the frozen source (only the layers below its tap run; the full model is kept for source-alone accuracy) and
target (`latentjax.bridge.experiment.load_models`), GSM8K from `latentjax.data.sources`, a grain loader of
translator batches (`latentjax.translator.data`), and returns the loss, the translator initialiser and an
evaluation hook that generates chain-of-thought answers in the mode of the current step (curriculum) and writes
per-example JSONL under `eval.output_dir/step_XXXXXXX/`. Config sections: `configs/translator/common.py`.
"""
from __future__ import annotations

import dataclasses

import jax
from absl import logging
from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.bridge.evaluate import eval_dir
from latentjax.bridge.experiment import load_models
from latentjax.bridge.forward import SenderTap, resolve_layer, sender_params_for_tap
from latentjax.bridge.model import count_params
from latentjax.data.pipeline import make_loader
from latentjax.data.sources import load_split
from latentjax.parallel import rules as rules_lib
from latentjax.train.experiment import Experiment
from latentjax.translator import data as data_lib
from latentjax.translator.evaluate import Evaluator, flat_metrics
from latentjax.translator.forward import LossWeights, TranslatorModel
from latentjax.translator.modules import CrossConfig, DiTConfig, TranslatorConfig, init_translator, table_rms


def translator_config(config: ConfigDict, source_dim: int, target_dim: int, target_rms: float) -> TranslatorConfig:
    t = config.translator
    return TranslatorConfig(kind=t.kind, source_dim=source_dim, target_dim=target_dim, num_tokens=int(t.num_tokens),
                            target_rms=float(target_rms), cross=CrossConfig(**dict(t.cross)),
                            dit=DiTConfig(**dict(t.dit)), dtype=config.train.compute_dtype or "float32")


def loss_weights(config: ConfigDict) -> LossWeights:
    return LossWeights(**{k: v for k, v in dict(config.loss).items()})


def build(config: ConfigDict, mesh: Mesh) -> Experiment:
    rules = rules_lib.rules_from_config(dict(config.mesh.rules))
    sender, receiver = load_models(config, mesh, rules)
    layer = resolve_layer(int(config.model.sender.layer), sender.config.num_layers)
    t = config.translator
    rms = table_rms(receiver.params["embed_tokens"]["embedding"])
    cfg = translator_config(config, sender.config.hidden_size, receiver.config.hidden_size, rms)
    s_tok, r_tok = sender.tokenizer, receiver.tokenizer
    model = TranslatorModel(tap=SenderTap.make(sender.config, layer), translator=cfg, receiver=receiver.config,
                            weights=loss_weights(config), positions=t.positions,
                            format_token_id=data_lib.format_token_id(r_tok))
    frozen = {"sender": sender_params_for_tap(sender.config, sender.params, layer), "receiver": receiver.params}
    source_full = (sender.config, sender.params) if config.eval.source_alone else None

    data_dir = config.data.path or None
    train_rows = load_split("gsm8k", "train", data_dir)
    train_examples = data_lib.gsm8k_examples(train_rows)
    if int(config.data.train_limit):
        train_examples = train_examples[: int(config.data.train_limit)]

    def init_trainable(rng):
        return init_translator(cfg, rng)

    num_params = count_params(jax.eval_shape(init_trainable, jax.random.PRNGKey(0))["params"])
    logging.info("Translator %s: %s parameters, K=%d, source layer %d of %d, target embedding RMS %.4g.",
                 cfg.kind, f"{num_params:,}", cfg.num_tokens, layer, sender.config.num_layers, rms)

    batch_size = int(config.train.batch_size)
    encoder = data_lib.Encode(s_tok, r_tok, cfg.num_tokens, batch_size, mode=t.mode,
                              curriculum_steps=int(t.soft_only_curriculum_steps), context=t.train_context,
                              teacher=t.teacher, sender_max_tokens=int(config.data.sender_max_tokens))
    loader = make_loader(train_examples, batch_size, int(config.data.shuffle_seed), transforms=[encoder],
                         worker_count=int(config.data.worker_count),
                         batch_fn=data_lib.pad_batch(s_tok.pad_token_id, r_tok.pad_token_id or 0, cfg.num_tokens,
                                                     int(config.data.sender_max_tokens),
                                                     int(config.data.receiver_max_tokens),
                                                     bool(config.data.get("fixed_lengths", False))))

    ecfg = config.eval
    test_rows = load_split("gsm8k", ecfg.split, data_dir)
    test_examples = data_lib.gsm8k_examples(test_rows)
    few_shot = data_lib.few_shot_prefix(train_rows, int(ecfg.few_shot), int(ecfg.few_shot_seed))
    evaluators: dict = {}

    def evaluator(num: int) -> Evaluator:
        if num not in evaluators:
            evaluators[num] = Evaluator(model, test_examples[:num] if num else test_examples, s_tok, r_tok,
                                        few_shot=few_shot, batch_size=int(ecfg.batch_size),
                                        max_new_tokens=int(ecfg.max_new_tokens),
                                        sender_max_tokens=int(ecfg.sender_max_tokens), seed=int(ecfg.seed),
                                        mesh=mesh, rules=rules, source=source_full,
                                        sender_few_shot=bool(ecfg.sender_few_shot), context=t.train_context)
        return evaluators[num]

    def eval_fn(variables, step: int) -> dict:
        final = step >= int(config.train.steps)
        num = int(ecfg.final_num_samples if final else ecfg.num_samples)
        mode = data_lib.mode_at_step(step, t.mode, int(t.soft_only_curriculum_steps))
        out_dir = eval_dir(ecfg.output_dir, step) if ecfg.output_dir else None
        summary, _ = evaluator(num).evaluate(variables, frozen, mode, out_dir, name=f"gsm8k_{mode}",
                                             baselines=bool(ecfg.baselines), step=step)
        return {**flat_metrics(summary), "n": summary["n"]}

    fingerprint = {
        "experiment": "translator", "sender": config.model.sender.path, "sender_layer": layer,
        "receiver": config.model.receiver.path, "translator_num_params": num_params,
        "translator": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dtype", "target_rms")},
    }
    return Experiment(init_trainable=init_trainable, frozen=frozen, loss_fn=model.loss, train_data=loader,
                      batch_axes=data_lib.BATCH_AXES, eval_fn=eval_fn, fingerprint=fingerprint)


__all__ = ["build", "loss_weights", "translator_config"]
