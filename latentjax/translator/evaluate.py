"""GSM8K evaluation of a translator: the target generates a chain-of-thought answer (greedy, jitted KV-cache loop
of `latentjax.inference.generate`) from `[K soft tokens] + [context]`, the official extraction scores it, and
per-example JSONL plus a summary JSON are written (`latentjax.eval.reports`).

The text after the soft tokens is `translator.data.target_context_ids(tokenizer, mode, evaluation prompt,
context)`, the function training rows use too (`soft_plus_text` = the evaluation prompt plus the format line,
`soft_only` = BOS plus the format line, or nothing under context "reference"). Every batch is padded to the
widest row of the whole item set, so one evaluation compiles the generation loop once. Source-alone and
target-alone accuracy (each model reading the evaluation prompt as text) are computed once per item set and
reported beside the bridged numbers.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.bridge.batching import token_ids
from latentjax.eval.math_answers import GSM8K_INVALID, gsm8k_gold, gsm8k_official_extract
from latentjax.eval.reports import write_eval_outputs
from latentjax.eval.stats import accuracy_summary
from latentjax.inference.generate import decoder_apply, generate
from latentjax.parallel import rules as rules_lib
from latentjax.translator.data import check_context, eval_prompt, target_context_ids
from latentjax.translator.forward import TranslatorModel

TOP_OUTPUTS = 5


@functools.partial(jax.jit, static_argnums=0)
def _prefix(model: TranslatorModel, variables, frozen, ids, mask, ctx_ids, rng):
    return model.prefix_embeds(variables, frozen, ids, mask, ctx_ids, rng)


def _width(rows: Sequence[Sequence[int]], multiple: int) -> int:
    return -(-max(len(r) for r in rows) // multiple) * multiple


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 32,
              width: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    width = width or _width(rows, multiple)
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        if r:
            ids[i, -len(r):], mask[i, -len(r):] = r, True
    return ids, mask


def score(output: str, gold_solution: str) -> dict:
    """Official GSM8K scoring of one generation: {"extracted", "correct"} (no last-number fallback)."""
    extracted = gsm8k_official_extract(output)
    return {"extracted": extracted, "correct": extracted != GSM8K_INVALID and extracted == gsm8k_gold(gold_solution)}


def collapse_stats(records: Sequence[dict], key: str = "extracted", top: int = TOP_OUTPUTS) -> dict:
    """Accuracy, invalid count/rate and the most frequent extracted answers (the collapse detector)."""
    correct = [bool(r["correct"]) for r in records]
    s = accuracy_summary(np.asarray(correct, bool))
    counts = collections.Counter(r[key] for r in records)
    n = len(records)
    return {"n": n, "accuracy": s.accuracy, "correct": s.correct, "ci95": [s.ci_low, s.ci_high],
            "invalid": counts.get(GSM8K_INVALID, 0), "invalid_rate": counts.get(GSM8K_INVALID, 0) / n if n else 0.0,
            "distinct_answers": len(counts), "top_outputs": [[a, c] for a, c in counts.most_common(top)]}


@dataclasses.dataclass
class Evaluator:
    """Evaluates translator variables on fixed GSM8K examples; `evaluate(variables, frozen, mode, out_dir, name)`."""

    model: TranslatorModel
    examples: Sequence[dict]  # {"id", "question", "answer"}
    sender_tokenizer: Any
    receiver_tokenizer: Any
    few_shot: str = ""  # the prefix from `data.few_shot_prefix`
    batch_size: int = 8
    max_new_tokens: int = 256
    sender_max_tokens: int = 2048
    seed: int = 0  # DiT sampling noise
    mesh: Any = None
    rules: Any = rules_lib.DEFAULT_RULES
    source: Optional[tuple] = None  # (DecoderConfig, full params) of the source for source-alone accuracy
    sender_few_shot: bool = True  # the source reads the evaluation prompt (else the training prompt)
    context: str = "mode"  # translator.train_context: the same context training rows have

    def __post_init__(self):
        self.prompts = [eval_prompt(ex["question"], self.few_shot) for ex in self.examples]
        self.sender_prompts = (self.prompts if self.sender_few_shot
                               else [eval_prompt(ex["question"], "") for ex in self.examples])
        self._sender_ids: Optional[list] = None
        self._context_ids: dict = {}
        self.apply_fn = self.model.apply_fn()
        self.text_apply = decoder_apply(self.model.receiver)
        self.source_apply = decoder_apply(self.source[0]) if self.source else None
        self._baselines: Optional[dict] = None

    def _stops(self, tok, config) -> tuple:
        stops = set(config.eos_token_ids)
        if tok.eos_token_id is not None:
            stops.add(tok.eos_token_id)
        return tuple(sorted(stops))

    def _batches(self):
        """Index chunks of batch_size; the last is filled by repeating its last item (dropped after)."""
        for start in range(0, len(self.examples), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(self.examples))))
            yield idx, idx + [idx[-1]] * (self.batch_size - len(idx))

    def _decode(self, tok, out, n: int) -> list[str]:
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        return [tok.decode(t[:m], skip_special_tokens=True) for t, m in zip(tokens[:n], lengths[:n])]

    def sender_ids(self) -> list[list[int]]:
        """The source's token ids per item (tokenized once)."""
        if self._sender_ids is None:
            self._sender_ids = [token_ids(self.sender_tokenizer, p, True, self.sender_max_tokens)
                                for p in self.sender_prompts]
        return self._sender_ids

    def context_ids(self, mode: str) -> list[list[int]]:
        """The target's token ids after the soft tokens per item in `mode` (`data.target_context_ids`)."""
        if mode not in self._context_ids:
            check_context(self.context, mode)
            self._context_ids[mode] = [target_context_ids(self.receiver_tokenizer, mode, p, self.context)
                                       for p in self.prompts]
        return self._context_ids[mode]

    def bridged_outputs(self, variables: Any, frozen: Any, mode: str) -> list[str]:
        r_tok, outputs = self.receiver_tokenizer, []
        mesh = self.mesh or rules_lib.single_device_mesh()
        rng = jax.random.PRNGKey(self.seed)
        senders, contexts = self.sender_ids(), self.context_ids(mode)
        src_width, ctx_width = _width(senders, 32), _width(contexts, 8)
        for real, full in self._batches():
            src_ids, src_mask = _left_pad([senders[i] for i in full], self.sender_tokenizer.pad_token_id or 0,
                                          width=src_width)
            ctx_ids, ctx_mask = _left_pad([contexts[i] for i in full], r_tok.pad_token_id or 0, width=ctx_width)
            with rules_lib.activate(mesh, self.rules):
                prefix = _prefix(self.model, variables, frozen, jnp.asarray(src_ids), jnp.asarray(src_mask),
                                 jnp.asarray(ctx_ids), jax.random.fold_in(rng, real[0]))
            mask = np.concatenate([np.ones((len(full), self.model.num_soft), bool), ctx_mask], axis=1)
            out = generate(self.model.receiver, frozen["receiver"], inputs_embeds=prefix, attention_mask=mask,
                           max_new_tokens=self.max_new_tokens, stop_token_ids=self._stops(r_tok, self.model.receiver),
                           pad_token_id=r_tok.pad_token_id or 0, apply_fn=self.apply_fn, mesh=mesh, rules=self.rules)
            outputs.extend(self._decode(r_tok, out, len(real)))
        return outputs

    def text_outputs(self, config, params, tok, apply_fn) -> list[str]:
        """One model reading the evaluation prompt as text (target-alone / source-alone)."""
        outputs = []
        mesh = self.mesh or rules_lib.single_device_mesh()
        rows = [token_ids(tok, p, True) for p in self.prompts]
        width = _width(rows, 32)
        for real, full in self._batches():
            ids, mask = _left_pad([rows[i] for i in full], tok.pad_token_id or 0, width=width)
            out = generate(config, params, ids, mask, max_new_tokens=self.max_new_tokens,
                           stop_token_ids=self._stops(tok, config), pad_token_id=tok.pad_token_id or 0,
                           apply_fn=apply_fn, mesh=mesh, rules=self.rules)
            outputs.extend(self._decode(tok, out, len(real)))
        return outputs

    def baselines(self, frozen: Any) -> dict:
        """{"target": outputs, "source": outputs or None}, computed once (the frozen models never change)."""
        if self._baselines is None:
            target = self.text_outputs(self.model.receiver, frozen["receiver"], self.receiver_tokenizer,
                                       self.text_apply)
            source = (self.text_outputs(self.source[0], self.source[1], self.sender_tokenizer, self.source_apply)
                      if self.source else None)
            self._baselines = {"target": target, "source": source}
        return self._baselines

    def evaluate(self, variables: Any, frozen: Any, mode: str, out_dir: Optional[str] = None, name: str = "eval",
                 baselines: bool = True, step: Optional[int] = None) -> tuple[dict, list[dict]]:
        """(summary, records); written to out_dir/{name}.jsonl and .summary.json when out_dir is given."""
        outputs = self.bridged_outputs(variables, frozen, mode)
        base = self.baselines(frozen) if baselines else {"target": None, "source": None}
        records = []
        for i, (ex, out) in enumerate(zip(self.examples, outputs)):
            rec = {"id": ex["id"], "mode": mode, "question": ex["question"], "prompt": self.prompts[i],
                   "gold": gsm8k_gold(ex["answer"]), "output": out, **score(out, ex["answer"])}
            for who in ("target", "source"):
                if base[who] is not None:
                    s = score(base[who][i], ex["answer"])
                    rec.update({f"{who}_output": base[who][i], f"{who}_extracted": s["extracted"],
                                f"{who}_correct": s["correct"]})
            records.append(rec)
        summary = {"mode": mode, "step": step, "soft_tokens": self.model.num_soft,
                   "few_shot": bool(self.few_shot), "max_new_tokens": self.max_new_tokens,
                   "bridged": collapse_stats(records)}
        for who in ("target", "source"):
            if base[who] is not None:
                rows = [{"extracted": r[f"{who}_extracted"], "correct": r[f"{who}_correct"]} for r in records]
                summary[f"{who}_alone"] = collapse_stats(rows)
        summary["n"] = len(records)
        if out_dir:
            write_eval_outputs(out_dir, name, records, summary)
        return summary, records


def flat_metrics(summary: dict) -> dict:
    """Scalars for the training log: bridged accuracy/invalid rate/distinct answers, baseline accuracies."""
    b = summary["bridged"]
    out = {"accuracy": b["accuracy"], "invalid_rate": b["invalid_rate"], "distinct_answers": b["distinct_answers"],
           "soft_only": float(summary["mode"] == "soft_only")}
    for who in ("target", "source"):
        if f"{who}_alone" in summary:
            out[f"{who}_alone_accuracy"] = summary[f"{who}_alone"]["accuracy"]
    return out


__all__ = ["Evaluator", "collapse_stats", "flat_metrics", "score"]
