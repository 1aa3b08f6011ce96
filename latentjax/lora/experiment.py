"""LoRA supervised fine-tuning as an `Experiment` for the one training loop (registry name "lora_sft").

The config is the shared one (configs/base.py: seed, mesh.rules, train.batch_size, ...) plus three sections this
module makes: `model_section()` (the frozen base), `lora_section()` (the adapter) and `data_section()` (the
prompt/completion data). `default_config()` puts them together with the few shared keys `build` reads.
"""
from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from jax.sharding import Mesh

from latentjax.lora import sft
from latentjax.lora.adapter import init_lora
from latentjax.lora.config import LoraConfig
from latentjax.parallel import rules as rules_lib
from latentjax.train.experiment import Experiment

ConfigDict = ml_collections.ConfigDict


def model_section(path: str = "", dtype: str = "bfloat16", remat_policy: str = "minimal",
                  attention_impl: str = "auto", loss_chunk: int = 0, loss_backward: str = "fused",
                  scan_layers: bool = True, fused_projections: bool = False) -> ConfigDict:
    """The frozen base: an HF Llama/Mistral folder (with its tokenizer); params stored in `param_dtype`
    ("" = dtype), computed in `dtype`. loss_chunk > 0: the train and eval loss are computed that many sequence
    positions at a time from the final hidden states (`latentjax.train.chunked_loss`), never materialising the
    float32 logits [batch, length, vocab]; 0 = the full logits. loss_backward: "fused" (each chunk's gradient taken
    in the forward pass: no extra head matmul) or "recompute" (the backward recomputes each chunk's logits).
    scan_layers=False: per-layer base weights (no per-layer weight copies in the step). 8B shape, rank 128, 4 x 512
    on an H100: per-layer, no remat, with train.xla_command_buffers=False: 139-142 ms at 31.2 GiB; scanned: no remat
    180 ms at 36.2 GiB, `lean` 195 ms at 22.6 GiB; per-layer `lean` 209 ms at 22.6 GiB. fused_projections=True:
    one q/k/v and one gate/up matmul per layer (the adapter and its PEFT export unchanged); per-layer, no remat,
    143 ms at 34.7 GiB, so not the default."""
    return ConfigDict(dict(path=path, dtype=dtype, param_dtype="", remat_policy=remat_policy,
                           attention_impl=attention_impl, loss_chunk=int(loss_chunk), loss_backward=loss_backward,
                           scan_layers=bool(scan_layers), fused_projections=bool(fused_projections)))


def lora_section(rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets: str = "all",
                 use_rslora: bool = False) -> ConfigDict:
    """See `latentjax.lora.LoraConfig`. `targets`: comma-separated patterns, e.g. "q,v" or "self_attn.*,down_proj"
    (a string, so `--config.lora.targets=q,v` works)."""
    return ConfigDict(dict(rank=int(rank), alpha=float(alpha), dropout=float(dropout), targets=targets,
                           use_rslora=bool(use_rslora)))


def data_section(name: str = "", path: str = "", seq_len: int = 1024) -> ConfigDict:
    """Prompt/completion rows: `path` (a .jsonl/.json/.parquet/.csv file) or a known dataset `name` with `split`
    (latentjax.data.load_split). Held out for evaluation: `eval_path`, or `eval_split` of `name`, or else a
    seeded `eval_fraction` of the training rows. `seq_len` is the longest example (longer ones are cut at the
    end; one with no completion token left is dropped); `buckets` are the padded lengths (default: powers of
    two up to seq_len). chat=True renders prompts with the tokenizer's chat template, else `prompt_template`.
    completion_only=False puts the loss on the whole text. num_examples > 0 keeps the first N training rows."""
    return ConfigDict(dict(
        name=name, path=path, split="train", eval_split="", eval_path="", eval_fraction=0.05,
        prompt_field="prompt", completion_field="completion", chat=True, system="", prompt_template="{prompt}",
        completion_only=True, seq_len=int(seq_len), buckets=(), shuffle_seed=0, num_examples=0,
        eval_batch_size=8, max_eval_examples=0))


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        experiment="lora_sft", seed=42,
        mesh=ConfigDict(dict(shape=(-1, 1, 1), rules=ConfigDict())),
        train=ConfigDict(dict(batch_size=8)),
        model=model_section(), lora=lora_section(), data=data_section()))


def lora_config_from(config: Any) -> LoraConfig:
    lc = config.lora
    targets = lc.targets if isinstance(lc.targets, str) else tuple(lc.targets)
    return LoraConfig(rank=int(lc.rank), alpha=float(lc.alpha), dropout=float(lc.dropout), targets=targets,
                      use_rslora=bool(lc.use_rslora))


def _rows(dc: Any, which: str) -> list:
    from latentjax.data.sources import load_file, load_split

    if which == "train":
        if dc.path:
            return list(load_file(dc.path))
        if dc.name:
            return list(load_split(dc.name, dc.split))
        raise ValueError("lora_sft needs data.path (a JSON Lines file) or data.name (a known dataset).")
    if dc.eval_path:
        return list(load_file(dc.eval_path))
    if dc.name and dc.eval_split:
        return list(load_split(dc.name, dc.eval_split))
    return []


def split_rows(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded random `fraction` of the rows held out (at least one when fraction > 0)."""
    if fraction <= 0:
        return rows, []
    held = set(np.random.default_rng(seed).permutation(len(rows))[:max(1, int(round(fraction * len(rows))))])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def build(config: Any, mesh: Mesh) -> Experiment:
    from latentjax.models.model import from_pretrained

    rules = rules_lib.rules_from_config(dict(config.mesh.get("rules", {}) or {}))
    mc, dc = config.model, config.data
    model = from_pretrained(mc.path, dtype=mc.dtype, param_dtype=mc.get("param_dtype") or mc.dtype, mesh=mesh,
                            rules=rules, remat_policy=mc.remat_policy, attention_impl=mc.attention_impl,
                            scan_layers=bool(mc.get("scan_layers", True)),
                            fused_projections=bool(mc.get("fused_projections", False)))
    lora_cfg = lora_config_from(config)
    loss_chunk = int(mc.get("loss_chunk", 0) or 0)
    loss_backward = mc.get("loss_backward", "fused") or "fused"
    tok = model.tokenizer

    train_rows, eval_rows = _rows(dc, "train"), _rows(dc, "eval")
    if not eval_rows:
        train_rows, eval_rows = split_rows(train_rows, float(dc.eval_fraction), int(config.seed))
    if dc.num_examples:
        train_rows = train_rows[:int(dc.num_examples)]
    if dc.max_eval_examples:
        eval_rows = eval_rows[:int(dc.max_eval_examples)]
    enc = dict(prompt_field=dc.prompt_field, completion_field=dc.completion_field, chat=bool(dc.chat),
               system=dc.system or None, prompt_template=dc.prompt_template, completion_only=bool(dc.completion_only),
               max_length=int(dc.seq_len))
    train, _ = sft.encode_examples(tok, train_rows, **enc)
    held, _ = sft.encode_examples(tok, eval_rows, **enc)
    buckets = tuple(dc.buckets) or sft.default_buckets(int(dc.seq_len))
    pad_id = tok.pad_token_id or 0
    train_data = sft.BucketedBatches(train, int(config.train.batch_size), buckets, seed=int(dc.shuffle_seed),
                                     pad_id=pad_id)
    eval_fn = None
    if held:
        eval_fn = sft.make_eval_fn(model.config, lora_cfg, model.params,
                                   sft.eval_batches(held, int(dc.eval_batch_size), buckets, pad_id), mesh, rules,
                                   loss_chunk=loss_chunk)
    return Experiment(
        init_trainable=lambda rng: init_lora(model.config, lora_cfg, rng),
        frozen=model.params,
        loss_fn=sft.make_loss_fn(model.config, lora_cfg, rules, loss_chunk=loss_chunk, loss_backward=loss_backward),
        train_data=train_data,
        batch_axes=dict(sft.BATCH_AXES),
        eval_fn=eval_fn,
        fingerprint={"experiment": "lora_sft", "base": mc.path, "num_layers": model.config.num_layers,
                     "hidden_size": model.config.hidden_size, "vocab_size": model.config.vocab_size,
                     "rank": lora_cfg.rank, "targets": list(lora_cfg.targets)},
    )
