"""Evaluation of a bridge on a task: greedy generation from `[primer] + [soft tokens]` scored by the reference's
rules, plus label scoring (argmax over the label set of the answer's summed log-likelihood), Wilson intervals,
per-class accuracy, confusion matrices, and a per-example JSONL with a summary JSON (latentjax.eval).

The primer is the same for every example, so prompts need no padding and generation reads the last column.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.bridge.batching import EncodeExample, answer_ids, pad_batch, token_ids
from latentjax.bridge.forward import BridgedModel
from latentjax.eval import classification as cls_lib
from latentjax.eval.reports import write_eval_outputs
from latentjax.eval.stats import accuracy_summary
from latentjax.parallel import rules as rules_lib


@functools.partial(jax.jit, static_argnums=0)
def _prompt_embeds(model: BridgedModel, bridge_vars, frozen, ids, mask, primer_ids):
    return model.prompt_embeds(bridge_vars, frozen, ids, mask, primer_ids)


@functools.partial(jax.jit, static_argnums=0)
def _label_scores(model: BridgedModel, frozen, prefix, label_ids, label_mask):
    return model.label_scores(frozen, prefix, label_ids, label_mask)


def label_table(task: Any, receiver_tokenizer: Any, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Every label's answer tokens (as trained: no special tokens, EOS if the task adds it), right-padded;
    the label count is padded to a multiple of `chunk` with empty rows. -> (ids, mask) [C', La]."""
    rows = [answer_ids(receiver_tokenizer, task.answer_text(c), task.answer_eos) for c in range(task.num_classes)]
    width = max(len(r) for r in rows)
    total = -(-len(rows) // chunk) * chunk
    ids = np.zeros((total, width), np.int32)
    mask = np.zeros((total, width), np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


@dataclasses.dataclass
class Evaluator:
    """Evaluates bridge variables on fixed examples; `evaluate(bridge_vars, frozen, out_dir, name)`."""

    model: BridgedModel
    task: Any
    examples: Sequence[dict]
    sender_tokenizer: Any
    receiver_tokenizer: Any
    batch_size: int = 16
    max_new_tokens: int = 0  # 0 = the task's default
    generate: bool = True
    label_scoring: bool = True
    label_chunk: int = 16
    mesh: Any = None
    rules: Any = rules_lib.DEFAULT_RULES

    def __post_init__(self):
        self.encoder = EncodeExample(self.sender_tokenizer, self.receiver_tokenizer, self.task.primer,
                                     self.model.bridge.num_latents, self.task.sender_max_tokens,
                                     self.task.answer_eos, with_answer=False)
        self.batch_fn = pad_batch(self.sender_tokenizer.pad_token_id, self.receiver_tokenizer.pad_token_id,
                                  self.task.sender_max_tokens, batch_size=self.batch_size)
        self.primer_ids = np.asarray(token_ids(self.receiver_tokenizer, self.task.primer, False), np.int32)
        self.scored = self.label_scoring and self.task.num_classes > 0
        if self.scored:
            self.label_ids, self.label_mask = label_table(self.task, self.receiver_tokenizer,
                                                          min(self.label_chunk, self.task.num_classes))
        stops = set(self.model.receiver.eos_token_ids)
        if self.receiver_tokenizer.eos_token_id is not None:
            stops.add(self.receiver_tokenizer.eos_token_id)
        self.stop_ids = tuple(sorted(stops))
        from latentjax.inference.generate import decoder_apply

        self.apply_fn = decoder_apply(self.model.receiver)  # one object, so generate() compiles once, not per call

    def _generate(self, frozen: Any, prefix: jax.Array) -> list[str]:
        from latentjax.inference.generate import generate

        out = generate(self.model.receiver, frozen["receiver"], inputs_embeds=prefix,
                       attention_mask=np.ones(prefix.shape[:2], bool),
                       max_new_tokens=self.max_new_tokens or self.task.max_new_tokens, stop_token_ids=self.stop_ids,
                       pad_token_id=self.receiver_tokenizer.pad_token_id or 0, apply_fn=self.apply_fn, mesh=self.mesh,
                       rules=self.rules)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        return [self.receiver_tokenizer.decode(t[:n], skip_special_tokens=True) for t, n in zip(tokens, lengths)]

    def _scores(self, frozen: Any, prefix: jax.Array) -> np.ndarray:
        chunk = min(self.label_chunk, self.task.num_classes)
        parts = [_label_scores(self.model, frozen, prefix, self.label_ids[i:i + chunk], self.label_mask[i:i + chunk])
                 for i in range(0, len(self.label_ids), chunk)]
        return np.concatenate([np.asarray(p) for p in parts], axis=1)[:, :self.task.num_classes]

    def run(self, bridge_vars: Any, frozen: Any) -> tuple[list[str], Optional[np.ndarray]]:
        """Raw generated outputs (or empty strings) and label log-likelihoods [N, C] (or None)."""
        outputs, scores = [], []
        mesh = self.mesh or rules_lib.single_device_mesh()
        for start in range(0, len(self.examples), self.batch_size):
            chunk = self.examples[start:start + self.batch_size]
            batch = self.batch_fn([self.encoder.map(ex) for ex in chunk])
            with rules_lib.activate(mesh, self.rules):
                prefix = _prompt_embeds(self.model, bridge_vars, frozen, jnp.asarray(batch["sender_input_ids"]),
                                        jnp.asarray(batch["sender_attention_mask"]), jnp.asarray(self.primer_ids))
                if self.scored:
                    scores.append(self._scores(frozen, prefix)[:len(chunk)])
            outputs.extend(self._generate(frozen, prefix)[:len(chunk)] if self.generate else [""] * len(chunk))
        return outputs, (np.concatenate(scores) if scores else None)

    def evaluate(self, bridge_vars: Any, frozen: Any, out_dir: Optional[str] = None, name: str = "eval"
                 ) -> tuple[dict, list[dict]]:
        """(summary, per-example records); both are written to out_dir/{name}.jsonl / .summary.json if given."""
        outputs, scores = self.run(bridge_vars, frozen)
        records = example_records(self.task, self.examples, outputs, scores, self.generate)
        summary = self.summarize(records, scores)
        if out_dir:
            write_eval_outputs(out_dir, name, records, summary)
        return summary, records

    def summarize(self, records: list[dict], scores: Optional[np.ndarray]) -> dict:
        summary = {"task": self.task.name, "n": len(records), "soft_tokens": self.model.bridge.num_latents}
        summary.update(summarize_records(self.task, records, scores, generated=self.generate,
                                         max_new_tokens=self.max_new_tokens or self.task.max_new_tokens))
        return summary


def example_records(task: Any, examples: Sequence[dict], outputs: Sequence[str], scores: Optional[np.ndarray],
                    generated: bool = True, input_key: str = "sender_text") -> list[dict]:
    """One JSONL record per example: input, gold, raw output, the task's scoring of it (when generated) and the
    label-scoring prediction with every label's log-likelihood (when scores [N, C] are given)."""
    records = []
    for i, (ex, out) in enumerate(zip(examples, outputs)):
        rec = {"id": ex["id"], "input": ex[input_key], "gold": ex["gold"], "label": ex["label"], "output": out}
        if generated:
            rec.update(task.score(out, ex))
        if scores is not None:
            pred = int(np.argmax(scores[i]))
            rec.update(label_score_prediction=pred, label_score_correct=pred == ex["label"],
                       label_loglik=scores[i].tolist())
        records.append(rec)
    return records


def summarize_records(task: Any, records: list[dict], scores: Optional[np.ndarray], *, generated: bool,
                      max_new_tokens: int) -> dict:
    """Generation accuracy (the reference rule) and label-scoring accuracy, each with a Wilson 95% interval,
    per-class accuracy and a confusion matrix (passkey: exact match and digit accuracy)."""
    summary: dict = {"n": len(records), "max_new_tokens": max_new_tokens}
    golds = [r["label"] for r in records]
    if generated:
        summary["generation"] = _accuracy([r["correct"] for r in records])
        if task.metric == "passkey":  # accuracy = exact match
            summary["generation"]["digit_accuracy"] = (float(np.mean([r["digit_accuracy"] for r in records]))
                                                       if records else float("nan"))
        else:
            preds = [r["prediction"] for r in records]
            summary["generation"].update(
                unparsed=sum(p < 0 for p in preds),
                per_class=_per_class(task, golds, [r["correct"] for r in records]),
                confusion=cls_lib.confusion_matrix(golds, preds, task.num_classes).tolist())
    if scores is not None:
        preds = cls_lib.label_scoring_predictions(scores)
        correct = [int(p) == g for p, g in zip(preds, golds)]
        summary["label_scoring"] = dict(
            _accuracy(correct), per_class=_per_class(task, golds, correct),
            confusion=cls_lib.confusion_matrix(golds, preds, task.num_classes, unparsed_column=False).tolist())
    return summary


def _accuracy(correct: Sequence[bool]) -> dict:
    s = accuracy_summary(np.asarray(correct, bool))
    return {"accuracy": s.accuracy, "correct": s.correct, "total": s.n, "ci95": [s.ci_low, s.ci_high]}


def _per_class(task: Any, golds: Sequence[int], correct: Sequence[bool]) -> dict:
    return {task.labels[row["label"]]: {k: row[k] for k in ("n", "correct", "accuracy")}
            for row in cls_lib.per_class_accuracy(golds, correct, task.num_classes)}


def flat_metrics(summary: dict) -> dict:
    """Scalars of a summary for the training log: generation/label-scoring accuracy (and digit accuracy)."""
    out = {}
    for key in ("generation", "label_scoring"):
        if key in summary:
            out[f"{key}_accuracy"] = summary[key]["accuracy"]
            if "digit_accuracy" in summary[key]:
                out["digit_accuracy"] = summary[key]["digit_accuracy"]
    return out


def eval_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:07d}")
