"""Evaluate one model (base, or base with an adapter merged) on MATH, GSM8K and MMLU-math.

MATH and GSM8K: the seed's zero-shot prompts (`latentjax.eval.math_answers`), greedy batched generation, scored by
`score_math` (last balanced `\\boxed{}`, Hendrycks normalisation; lenient metric beside it) and `score_gsm8k`
(boxed, else `####`, else last number). MMLU-math: the letter with the highest next-token log-probability after the
prompt (`choice_logprobs` over the spellings "A" and " A", ...), no generation. Each benchmark writes
`{out_dir}/{benchmark}.jsonl` (one record per item, the generation included) and `{benchmark}.summary.json`
(accuracy, Wilson interval, extraction rate, by level/subject); a benchmark whose summary exists is not rerun.

Several JAX processes: each batch is a global batch in which every process feeds its own disjoint block of items
(`generate_phase.generate_rows`; the MMLU scores likewise) and the results are gathered, so every process holds
the records of all items; process 0 alone writes them. The records equal a one-process run's.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.eval import math_answers as ma
from latentjax.eval import reports, stats
from latentjax.inference.sampling import SamplingConfig
from latentjax.models.decoder import Decoder
from latentjax.parallel import distributed
from latentjax.parallel import rules as rules_lib
from latentjax.subliminal.generate_phase import (Sampler, encode_left_padded, generate_rows, is_writer,
                                                 render_prompts, stop_token_ids)

BENCHMARKS = ("math", "gsm8k", "mmlu_math")


def load_items(benchmark: str, dataset: str = "", split: str = "test", num_examples: int = 0, seed: int = 0,
               mmlu_subjects: Sequence[str] = ()) -> list[dict]:
    """Rows of a benchmark (`dataset` overrides the registered name, e.g. "math500" for MATH), optionally a
    seeded random subset of `num_examples` kept in dataset order; MMLU rows filtered to `mmlu_subjects`."""
    from latentjax.data.sources import load_split

    rows = [dict(r) for r in load_split(dataset or benchmark, split)]
    if benchmark == "mmlu_math" and mmlu_subjects:
        rows = [r for r in rows if r["subject"] in set(mmlu_subjects)]
    for i, r in enumerate(rows):
        r["item"] = i
    if num_examples and num_examples < len(rows):
        keep = sorted(np.random.default_rng(seed).permutation(len(rows))[:int(num_examples)])
        rows = [rows[i] for i in keep]
    return rows


def greedy_generations(sampler: Sampler, prompts: Sequence[str], *, chat: bool, batch_size: int,
                       max_new_tokens: int, progress: bool = False, desc: str = "") -> list[str]:
    """Greedy completions of `prompts` in batches (prompts sorted by length so batches pad little)."""
    from tqdm import tqdm

    tok = sampler.tokenizer
    texts = render_prompts(tok, prompts, chat)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    stops = stop_token_ids(sampler)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    out: list[Optional[str]] = [None] * len(texts)
    for start in tqdm(range(0, len(order), batch_size), disable=not (progress and is_writer()), desc=desc,
                      dynamic_ncols=True):
        idx = order[start:start + batch_size]
        ids, mask = encode_left_padded(tok, [texts[i] for i in idx], batch_size, chat)
        tokens, lengths = generate_rows(sampler, ids, mask, max_new_tokens=int(max_new_tokens),
                                        sampling=SamplingConfig(), stop_token_ids=stops, pad_token_id=int(pad_id))
        for i, t, n in zip(idx, tokens, lengths):
            out[i] = tok.decode(t[:int(n)], skip_special_tokens=True)
    return out  # type: ignore[return-value]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _last_logprobs(config, rules, params, input_ids, attention_mask):
    with rules_lib.axis_rules(rules):
        out = Decoder(config).apply({"params": params}, input_ids, attention_mask, return_logits=False)
        last = out.hidden[:, -1:]
        logits = Decoder(config).apply(
            {"params": params}, last,
            method=lambda m, h: m.embed_tokens.attend(h) if config.tie_word_embeddings else m.lm_head(h))
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)


def letter_token_ids(tokenizer: Any, letters: Sequence[str] = ma.MMLU_LETTERS) -> list[list[int]]:
    """Single-token spellings of each letter ("A", " A")."""
    out = []
    for letter in letters:
        ids = set()
        for spelling in (letter, " " + letter):
            enc = tokenizer.encode(spelling, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
        if not ids:
            raise ValueError(f"The tokenizer has no single token for the letter {letter!r}.")
        out.append(sorted(ids))
    return out


def mmlu_letter_scores(sampler: Sampler, prompts: Sequence[str], *, chat: bool, batch_size: int) -> np.ndarray:
    """[N, 4] log-probability of each letter as the next token after each prompt."""
    tok = sampler.tokenizer
    texts = render_prompts(tok, prompts, chat)
    letters = letter_token_ids(tok)
    scores = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        ids, mask = encode_left_padded(tok, chunk, batch_size, chat)
        if jax.process_count() > 1:  # each process feeds its own rows; the scores are gathered to all
            rows = distributed.process_rows(ids.shape[0], sampler.mesh, sampler.rules)
            batch = distributed.global_batch({"input_ids": ids[rows], "attention_mask": mask[rows]}, sampler.mesh,
                                             sampler.rules)
            ids, mask = batch["input_ids"], batch["attention_mask"]
        with jax.set_mesh(sampler.mesh):
            lp = np.asarray(distributed.to_host(
                _last_logprobs(sampler.config, sampler.rules, sampler.params, ids, mask)))
        scores.append(ma.choice_logprobs(lp[:len(chunk)], letters))
    return np.concatenate(scores, axis=0)


def _summary(records: Sequence[dict], groups: Sequence[str] = ()) -> dict:
    correct = [bool(r["correct"]) for r in records]
    summary = stats.accuracy_summary(correct).as_dict()
    summary["extraction_rate"] = float(np.mean([r.get("extracted") is not None for r in records])) if records else None
    for g in groups:
        summary[f"by_{g}"] = {k: v.as_dict() for k, v in stats.accuracy_by_group(
            correct, [str(r.get(g)) for r in records]).items()}
    if records and "correct_lenient" in records[0]:
        summary["lenient"] = stats.accuracy_summary([bool(r["correct_lenient"]) for r in records]).as_dict()
    return summary


def evaluate_benchmark(sampler: Sampler, benchmark: str, items: Sequence[dict], *, chat: bool = True,
                       batch_size: int = 16, max_new_tokens: int = 1024, progress: bool = False,
                       mmlu_mode: str = "logprob") -> tuple[list, dict]:
    """(per-item records, summary) of one benchmark. mmlu_mode: "logprob" (letter with the highest next-token
    log-probability) or "generate" (the seed's: greedy `max_new_tokens`, then `extract_mmlu_letter`)."""
    if mmlu_mode not in ("logprob", "generate"):
        raise ValueError(f"mmlu_mode must be 'logprob' or 'generate', got {mmlu_mode!r}.")
    if benchmark == "math":
        gens = greedy_generations(sampler, [ma.format_math_prompt(r["problem"]) for r in items], chat=chat,
                                  batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, desc="MATH")
        records = [{"item": r["item"], "level": r.get("level"), "subject": r.get("type", r.get("subject")),
                    "gold": r["answer"], "generation": g, **ma.score_math(g, r["answer"])}
                   for r, g in zip(items, gens)]
        return records, _summary(records, ("level", "subject"))
    if benchmark == "gsm8k":
        gens = greedy_generations(sampler, [ma.format_gsm8k_prompt(r["question"]) for r in items], chat=chat,
                                  batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, desc="GSM8K")
        records = [{"item": r["item"], "generation": g, **ma.score_gsm8k(g, r["answer"])} for r, g in zip(items, gens)]
        return records, _summary(records, ("rule",))
    if benchmark == "mmlu_math" and mmlu_mode == "generate":  # the seed's generate-and-parse scoring
        gens = greedy_generations(sampler, [ma.format_mmlu_prompt(r["question"], r["choices"]) for r in items],
                                  chat=chat, batch_size=batch_size, max_new_tokens=max_new_tokens)
        records = []
        for r, g in zip(items, gens):
            gold, pred = ma.mmlu_gold_letter(r["answer"]), ma.extract_mmlu_letter(g)
            records.append({"item": r["item"], "subject": r["subject"], "gold": gold, "generation": g,
                            "extracted": pred, "correct": pred == gold})
        return records, _summary(records, ("subject",))
    if benchmark == "mmlu_math":
        scores = mmlu_letter_scores(sampler, [ma.format_mmlu_prompt(r["question"], r["choices"]) for r in items],
                                    chat=chat, batch_size=batch_size)
        preds = ma.letter_from_logprobs(scores)
        records = [{"item": r["item"], "subject": r["subject"], "gold": ma.mmlu_gold_letter(r["answer"]),
                    "extracted": p, "scores": s.tolist(), "correct": p == ma.mmlu_gold_letter(r["answer"])}
                   for r, p, s in zip(items, preds, scores)]
        return records, _summary(records, ("subject",))
    raise ValueError(f"Unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}.")


def evaluate_model(sampler: Sampler, out_dir: str, benchmarks: dict, *, chat: bool = True, batch_size: int = 16,
                   progress: bool = False, mmlu_mode: str = "logprob") -> dict:
    """Run each benchmark of `benchmarks` = {name: {"items": rows, "max_new_tokens": n}} whose summary is not yet
    in `out_dir`; returns {name: summary}."""
    results = {}
    for name, spec in benchmarks.items():
        summary_path = os.path.join(out_dir, f"{name}.summary.json")
        distributed.barrier(f"evaluate:{out_dir}:{name}")  # every process sees the same files
        if os.path.exists(summary_path):
            results[name] = reports.read_json(summary_path)
            continue
        records, summary = evaluate_benchmark(sampler, name, spec["items"], chat=chat, batch_size=batch_size,
                                              max_new_tokens=int(spec.get("max_new_tokens", 512)), progress=progress,
                                              mmlu_mode=mmlu_mode)
        if is_writer():
            reports.write_eval_outputs(out_dir, name, records, summary)
        results[name] = summary
    distributed.barrier(f"evaluate:{out_dir}:written")
    return results
