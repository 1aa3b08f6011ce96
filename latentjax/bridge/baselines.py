"""Text baselines of the Telepathy bridge (issue 5 item 5), scored exactly like the bridge's Evaluator.

  receiver_text  the receiver alone reads the task's direct prompt (zero-shot)
  sender_text    the sender alone reads the same prompt
  few_shot       the receiver reads k labelled exemplars (drawn once, with a fixed seed, from the train split)
                 followed by the test text
  text_relay     the sender summarises the text in one sentence (greedy, up to 50 tokens), the receiver
                 classifies from the summary

Prompts are the seed's (telepathy_reference.md §6.1, §6.2, §6.4): SST-2 and AG News direct prompts are the
"same prompt as sender" protocol (A) behind the seed table's 93.5 / 70.5; Banking77's is protocol B (19.5 / 22.0).
No chat templates; the tokenizer's own special tokens (BOS) are added. Prompts are left-padded to bucket lengths and
generated in batches through `latentjax.inference.generate`; label scoring is `latentjax.bridge.forward.label_scores`
(the Evaluator's) with the padded prompt as prefix. Records and summaries come from the Evaluator's
`example_records` / `summarize_records` (generation accuracy by the reference rule, label-scoring accuracy, Wilson
95% intervals, per-class, confusion) and are written as `{out_dir}/{task}_{kind}.jsonl` / `.summary.json`.

    summary = evaluate_baseline(config, "receiver_text", "runs/sst2_baselines", num_examples=200)
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from latentjax.bridge.batching import token_ids
from latentjax.bridge.evaluate import example_records, label_table, summarize_records
from latentjax.bridge.forward import insert_soft_tokens, label_scores
from latentjax.eval.reports import write_eval_outputs
from latentjax.models.decoder import Decoder
from latentjax.parallel import rules as rules_lib
from latentjax.tasks import PasskeyTask, SyntheticTask, load_rows, select

BASELINES = ("receiver_text", "sender_text", "few_shot", "text_relay")
PROMPT_BUCKET = 32  # prompts are left-padded to multiples of this, so jit sees few shapes

# Direct prompts ({text} = the raw input, cut to task.sender_max_chars where the task has one).
DIRECT_TEMPLATES = {
    "sst2": "Review: {text}\nSentiment (positive or negative):",
    "ag_news": "Article: {text}\nTopic (world, sports, business, or science):",
    "banking77": "Classify this banking query into one of the intents.\n\nQuery: {text}\n\nIntent:",
}
# Text relay (§6.1): the sender's summary prompt and the receiver's question per task.
SUMMARY_TEMPLATE = "Summarize this in one sentence:\n\n{text}\n\nSummary:"
RELAY_TEMPLATE = "{question}\n\nText: {summary}\n\nAnswer:"
RELAY_QUESTIONS = {
    "sst2": "Is the sentiment positive or negative?",
    "ag_news": "What is the topic: world, sports, business, or science?",
    "banking77": "What is the banking intent of this query? Respond with just the intent category.",
    "passkey": "What is the secret access code?",
}
# Few-shot (§6.4): instruction, then `Text: ...\nLabel: ...` blocks.
FEW_SHOT_INSTRUCTIONS = {
    "sst2": "Classify the sentiment as positive or negative.",
    "ag_news": "Classify the topic as world, sports, business, or science.",
    "banking77": "Classify this banking query into one of the intents.",
    "passkey": "Give the secret access code.",
}
SHOT_TEMPLATE = "Text: {text}\nLabel: {label}\n\n"
QUERY_TEMPLATE = "Text: {text}\nLabel:"


def baseline_section(**overrides: Any) -> ConfigDict:
    """`config.baseline`: settings of the text baselines (the eval rows are config.eval's split / final_num_samples
    / subset / seed, the bridge's final evaluation set). max_new_tokens 0 = max(10, the task's default) (the
    reference generated 10 tokens for text baselines, 20 for Banking77); prompts longer than max_prompt_tokens keep
    their end (the question survives); primary_metric names the summary's top-level accuracy."""
    section = ConfigDict(dict(
        batch_size=16, max_new_tokens=0, max_prompt_tokens=1024, generate=True, label_scoring=True, label_chunk=16,
        few_shot_k=5, few_shot_seed=0, relay_max_chars=512, relay_summary_tokens=50, primary_metric="generation"))
    section.update(overrides)
    return section


# ----------------------------------------------------------------------------------------------------------------
# Examples and prompts
# ----------------------------------------------------------------------------------------------------------------

def text_examples(task: Any, split: str, data_dir: Optional[str] = None) -> list[dict]:
    """The task's examples with the raw input under "text" (the sender text itself for generated tasks)."""
    if isinstance(task, (SyntheticTask, PasskeyTask)):
        return [dict(ex, text=ex["sender_text"]) for ex in task.examples(split, data_dir)]
    rows = load_rows(task.dataset, split, data_dir)
    return [dict(task.example(row, i), text=row[task.text_field]) for i, row in enumerate(rows)]


def _cut(task: Any, text: str) -> str:
    limit = getattr(task, "sender_max_chars", None)
    return text[:limit] if limit else text


def direct_prompt(task: Any, text: str) -> str:
    """The zero-shot prompt a model reads on its own (receiver_text, sender_text)."""
    template = DIRECT_TEMPLATES.get(task.name, "{text}\n" + task.primer.rstrip())
    return template.format(text=_cut(task, text))


def few_shot_instruction(task: Any) -> str:
    if task.name in FEW_SHOT_INSTRUCTIONS:
        return FEW_SHOT_INSTRUCTIONS[task.name]
    return f"Classify the text as one of: {', '.join(task.labels)}."


def draw_shots(train: Sequence[dict], k: int, num_classes: int, seed: int) -> list[dict]:
    """k exemplars drawn once with `random.Random(seed)`: k // C per class plus one more for (k % C) seeded classes
    (so exactly k, unlike the reference's k // C per class), shuffled. Without classes: k random rows."""
    rng = random.Random(seed)
    if k <= 0:
        return []
    if num_classes <= 0:
        return rng.sample(list(train), min(k, len(train)))
    by_label: dict[int, list[dict]] = {}
    for ex in train:
        by_label.setdefault(ex["label"], []).append(ex)
    base, extra = divmod(k, num_classes)
    bonus = set(rng.sample(range(num_classes), extra))
    shots = []
    for c in range(num_classes):
        pool = by_label.get(c, [])
        shots.extend(rng.sample(pool, min(base + (c in bonus), len(pool))))
    rng.shuffle(shots)
    return shots


def few_shot_prompt(task: Any, shots: Sequence[dict], text: str) -> str:
    body = "".join(SHOT_TEMPLATE.format(text=_cut(task, s["text"]), label=s["gold"]) for s in shots)
    return f"{few_shot_instruction(task)}\n\n{body}{QUERY_TEMPLATE.format(text=_cut(task, text))}"


def summary_prompt(text: str, max_chars: int) -> str:
    return SUMMARY_TEMPLATE.format(text=text[:max_chars] if max_chars else text)


def relay_prompt(task: Any, summary: str) -> str:
    question = RELAY_QUESTIONS.get(task.name, few_shot_instruction(task))
    return RELAY_TEMPLATE.format(question=question, summary=summary)


# ----------------------------------------------------------------------------------------------------------------
# Batched generation and label scoring of left-padded prompts
# ----------------------------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _prompt_embeds(config, params, ids, soft, soft_start):
    embeds = Decoder(config).apply({"params": params}, ids, method=Decoder.embed)
    if soft is None:
        return embeds
    soft = jnp.broadcast_to(soft[None], (ids.shape[0],) + soft.shape).astype(embeds.dtype)
    return insert_soft_tokens(embeds, soft, soft_start)


@functools.partial(jax.jit, static_argnums=0)
def _label_scores(config, params, prefix, prefix_mask, label_ids, label_mask):
    return label_scores(config, params, prefix, label_ids, label_mask, prefix_mask)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, batch_size: int, bucket: int = PROMPT_BUCKET
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-pad id lists to a bucket length; short batches get rows of one pad token (mask 1, discarded).
    -> ids, mask [batch_size, T], and each row's pad count [batch_size]."""
    width = -(-max(len(r) for r in rows) // bucket) * bucket
    ids = np.full((batch_size, width), pad_id, np.int32)
    mask = np.zeros((batch_size, width), bool)
    pads = np.full(batch_size, width - 1, np.int32)
    for i in range(batch_size):
        row = rows[i] if i < len(rows) else [pad_id]
        ids[i, width - len(row):] = row
        mask[i, width - len(row):] = True
        pads[i] = width - len(row)
    return ids, mask, pads


@dataclasses.dataclass
class PromptRunner:
    """Greedy generation (up to max_new_tokens, stopped at EOS) and label scoring of prompts on one decoder.

    `run(rows)` takes token-id lists; with `soft` ([K, D]) each row holds K placeholder slots at `soft_at[i]` that
    are replaced by the soft prompt (prompt tuning); generation then starts from embeddings."""

    config: Any  # DecoderConfig
    params: Any
    tokenizer: Any
    task: Any
    batch_size: int = 16
    max_new_tokens: int = 10
    generate: bool = True
    label_scoring: bool = True
    label_chunk: int = 16
    mesh: Any = None
    rules: Any = rules_lib.DEFAULT_RULES

    def __post_init__(self):
        from latentjax.inference.generate import decoder_apply

        self.mesh = self.mesh or rules_lib.single_device_mesh()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        stops = set(self.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            stops.add(self.tokenizer.eos_token_id)
        self.stop_ids = tuple(sorted(stops))
        self.apply_fn = decoder_apply(self.config)
        self.scored = self.label_scoring and getattr(self.task, "num_classes", 0) > 0
        if self.scored:
            self.chunk = min(self.label_chunk, self.task.num_classes)
            self.label_ids, self.label_mask = label_table(self.task, self.tokenizer, self.chunk)

    def encode(self, prompt: str, max_tokens: int) -> list[int]:
        """Prompt ids with the tokenizer's special tokens; longer than max_tokens keeps the end."""
        ids = token_ids(self.tokenizer, prompt, True)
        return ids[-max_tokens:] if max_tokens and len(ids) > max_tokens else ids

    def run(self, rows: Sequence[Sequence[int]], soft: Optional[jax.Array] = None,
            soft_at: Optional[Sequence[int]] = None, max_new_tokens: Optional[int] = None, generate: bool = True,
            label_scoring: bool = True) -> tuple[list[str], Optional[np.ndarray], list[int]]:
        """(decoded outputs, label log-likelihoods [N, C] or None, generated token counts incl. a stop token)."""
        from latentjax.inference.generate import generate as generate_fn

        generate, scored = generate and self.generate, label_scoring and self.scored
        new_tokens = max_new_tokens or self.max_new_tokens
        outputs, scores, lengths = [], [], []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            ids, mask, pads = left_pad(chunk, self.pad_id, self.batch_size)
            embeds = None
            with rules_lib.activate(self.mesh, self.rules):
                if soft is not None or scored:
                    at = np.zeros(self.batch_size, np.int32)
                    if soft is not None:
                        at[:len(chunk)] = np.asarray(soft_at[start:start + len(chunk)]) + pads[:len(chunk)]
                    embeds = _prompt_embeds(self.config, self.params, jnp.asarray(ids), soft, jnp.asarray(at))
                if scored:
                    parts = [_label_scores(self.config, self.params, embeds, jnp.asarray(mask),
                                           self.label_ids[i:i + self.chunk], self.label_mask[i:i + self.chunk])
                             for i in range(0, len(self.label_ids), self.chunk)]
                    scores.append(np.concatenate([np.asarray(p) for p in parts], axis=1)
                                  [:len(chunk), :self.task.num_classes])
            if generate:
                prompt = dict(inputs_embeds=embeds) if soft is not None else dict(input_ids=ids)
                out = generate_fn(self.config, self.params, attention_mask=mask, max_new_tokens=new_tokens,
                                  stop_token_ids=self.stop_ids, pad_token_id=self.pad_id, apply_fn=self.apply_fn,
                                  mesh=self.mesh, rules=self.rules, **prompt)
                tokens, lens = np.asarray(out.tokens), np.asarray(out.lengths)
                outputs.extend(self.tokenizer.decode(t[:n], skip_special_tokens=True)
                               for t, n in list(zip(tokens, lens))[:len(chunk)])
                lengths.extend(int(n) for n in lens[:len(chunk)])
            else:
                outputs.extend([""] * len(chunk))
                lengths.extend([0] * len(chunk))
        return outputs, (np.concatenate(scores) if scores else None), lengths


# ----------------------------------------------------------------------------------------------------------------
# The baselines
# ----------------------------------------------------------------------------------------------------------------

def default_max_new_tokens(task: Any, configured: int) -> int:
    return int(configured) or max(10, int(task.max_new_tokens))


def primary(summary: dict, metric: str) -> dict:
    """Top-level accuracy / Wilson bounds / n from `metric` (falling back to whichever metric exists)."""
    key = metric if metric in summary else ("generation" if "generation" in summary else "label_scoring")
    if key not in summary:
        raise ValueError("A baseline summary needs generation or label scoring; both are switched off.")
    low, high = summary[key]["ci95"]
    return {"primary_metric": key, "accuracy": summary[key]["accuracy"], "ci95_low": low, "ci95_high": high}


def finish(task: Any, kind: str, examples: Sequence[dict], outputs: Sequence[str], scores: Optional[np.ndarray],
           *, generated: bool, max_new_tokens: int, metric: str, out_dir: Optional[str], extra: dict,
           record_extra: Optional[Sequence[dict]] = None, name: Optional[str] = None) -> dict:
    """Records + summary through the Evaluator's functions, top-level accuracy, files in out_dir."""
    records = example_records(task, examples, outputs, scores, generated, input_key="prompt")
    for rec, ex, more in zip(records, examples, record_extra or [{}] * len(records)):
        rec.update(text=ex["text"], **more)
    summary = {"task": task.name, "baseline": kind, **extra}
    summary.update(summarize_records(task, records, scores, generated=generated, max_new_tokens=max_new_tokens))
    summary.update(primary(summary, metric))
    if out_dir:
        write_eval_outputs(out_dir, name or f"{task.name}_{kind}", records, summary)
    return summary


def run_text_baseline(kind: str, task: Any, examples: Sequence[dict], *, receiver=None, sender=None,
                      train_examples: Sequence[dict] = (), settings: Optional[ConfigDict] = None,
                      out_dir: Optional[str] = None) -> dict:
    """One text baseline on loaded models (`LanguageModel`s; receiver for receiver_text / few_shot / text_relay,
    sender for sender_text / text_relay) and examples carrying "text" (see `text_examples`). -> summary."""
    if kind not in BASELINES:
        raise ValueError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)} (prompt tuning trains "
                         "through launch/train.py with configs/telepathy/prompt_tuning.py).")
    s = settings or baseline_section()
    new_tokens = default_max_new_tokens(task, s.max_new_tokens)
    reader = sender if kind == "sender_text" else receiver
    if reader is None or (kind == "text_relay" and sender is None):
        raise ValueError(f"Baseline {kind!r} needs the {'sender' if kind == 'sender_text' else 'receiver'}"
                         f"{' and the sender' if kind == 'text_relay' else ''} model.")

    def runner(model, max_new: int) -> PromptRunner:
        return PromptRunner(model.config, model.params, model.tokenizer, task, batch_size=int(s.batch_size),
                            max_new_tokens=max_new, generate=bool(s.generate), label_scoring=bool(s.label_scoring),
                            label_chunk=int(s.label_chunk), mesh=model.mesh, rules=model.rules)

    extra: dict = {"model": getattr(reader, "path", None), "settings": s.to_dict()}
    record_extra = None
    if kind in ("receiver_text", "sender_text"):
        prompts = [direct_prompt(task, ex["text"]) for ex in examples]
    elif kind == "few_shot":
        shots = draw_shots(train_examples, int(s.few_shot_k), getattr(task, "num_classes", 0),
                           int(s.few_shot_seed))
        if int(s.few_shot_k) and not shots:
            raise ValueError("few_shot needs train examples to draw exemplars from.")
        prompts = [few_shot_prompt(task, shots, ex["text"]) for ex in examples]
        extra["shots"] = [{"id": sh["id"], "label": sh["label"], "text": sh["text"]} for sh in shots]
    else:  # text_relay: the sender summarises, the receiver reads the summary
        if not s.generate:
            raise ValueError("text_relay needs generation (baseline.generate=True) for the summaries.")
        summarizer = runner(sender, int(s.relay_summary_tokens))
        rows = [summarizer.encode(summary_prompt(ex["text"], int(s.relay_max_chars)), int(s.max_prompt_tokens))
                for ex in examples]
        summaries, _, counts = summarizer.run(rows, generate=True, label_scoring=False)
        summaries = [t.strip() for t in summaries]
        prompts = [relay_prompt(task, t) for t in summaries]
        record_extra = [{"summary": t, "summary_tokens": n} for t, n in zip(summaries, counts)]
        extra.update(sender_model=getattr(sender, "path", None),
                     mean_summary_tokens=float(np.mean(counts)) if counts else 0.0)
    reading = runner(reader, new_tokens)
    rows = [reading.encode(p, int(s.max_prompt_tokens)) for p in prompts]
    outputs, scores, _ = reading.run(rows)
    examples = [dict(ex, prompt=p) for ex, p in zip(examples, prompts)]
    return finish(task, kind, examples, outputs, scores, generated=reading.generate, max_new_tokens=new_tokens,
                  metric=str(s.primary_metric), out_dir=out_dir, extra=extra, record_extra=record_extra)


def _load(config: ConfigDict, which: str, mesh, rules, cache: Optional[dict] = None):
    from latentjax.bridge.experiment import frozen_load_options
    from latentjax.models.model import from_pretrained

    section = config.model[which]
    if not section.path:
        raise ValueError(f"config.model.{which}.path is empty; set --config.model.{which}.path to an HF folder.")
    options = frozen_load_options(config.model)
    key = (section.path, section.dtype, *options.values())
    if cache is not None and key in cache:
        return cache[key]
    model = from_pretrained(section.path, dtype=section.dtype, mesh=mesh, rules=rules, **options)
    if cache is not None:
        cache[key] = model
    return model


def evaluate_baseline(config: ConfigDict, kind: str, out_dir: str, num_examples: Optional[int] = None, *,
                      cache: Optional[dict] = None) -> dict:
    """Run text baseline `kind` (receiver_text | sender_text | few_shot | text_relay) of a telepathy config (a
    configs/telepathy/*.py config: model paths, task, eval rows, `baseline` section) on the bridge's final evaluation
    rows (config.eval: split, final_num_samples, subset, seed; `num_examples` overrides the count, 0/None = the
    config's). Writes `{out_dir}/{task}_{kind}.jsonl` and `.summary.json` and returns the summary: accuracy,
    ci95_low, ci95_high, n, primary_metric, and the full generation / label_scoring sections. Pass the same
    `cache` dict to several calls to load each model (path, dtype) once; one model serves as both sender and receiver
    when their paths agree."""
    from latentjax.bridge.experiment import task_from_config
    from latentjax.parallel.mesh import mesh_from_config

    if kind not in BASELINES:
        raise ValueError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}.")
    settings = config.get("baseline") or baseline_section()
    task = task_from_config(config)
    data_dir = config.task.data_dir or None
    ecfg = config.eval
    num = num_examples or int(ecfg.final_num_samples) or None
    examples = select(text_examples(task, ecfg.split or task.eval_split, data_dir), num, ecfg.subset, int(ecfg.seed))
    train = text_examples(task, task.train_split, data_dir) if kind == "few_shot" else ()
    mesh, rules = mesh_from_config(config.mesh)
    cache = {} if cache is None else cache  # within one call, a shared sender/receiver folder is loaded once
    receiver = _load(config, "receiver", mesh, rules, cache) if kind != "sender_text" else None
    sender = _load(config, "sender", mesh, rules, cache) if kind in ("sender_text", "text_relay") else None
    return run_text_baseline(kind, task, examples, receiver=receiver, sender=sender, train_examples=train,
                             settings=settings, out_dir=out_dir)


__all__ = ["BASELINES", "DIRECT_TEMPLATES", "PromptRunner", "baseline_section", "direct_prompt", "draw_shots",
           "evaluate_baseline", "few_shot_prompt", "left_pad", "relay_prompt", "run_text_baseline", "summary_prompt",
           "text_examples"]
