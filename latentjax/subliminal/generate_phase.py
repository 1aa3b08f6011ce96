"""Sample number sequences in batches until the target count of valid ones is reached; resumable.

Every sampled prompt (valid or not) becomes one line of `samples.jsonl`, written batch by batch: {index, prompt,
completion, valid, reason, numbers, tokens, seed_numbers, ...}. Batch b always covers prompts [b*B, (b+1)*B) and
samples with the key fold_in(key(seed), b), so a rerun after an interruption keeps the complete batches already
written (a torn last line or partial batch is cut off) and continues with the same randomness: no prompt is sampled
twice. `select_sequences` then picks the kept rows (the first `target` valid ones, the seed's rule, or a seeded
random `target` of all valid ones, the paper's).

Screening (`screen`, e.g. (8, 24)): a small model answers most number prompts with prose, and a batch's decode loop
runs as long as its longest row. So a batch first samples only `screen[0]` tokens; rows whose text can no longer
pass the filter (`could_be_number_list`) stop there (written with the reason of the screened prefix and
`screened: true`), the others continue, re-prefilled with prompt + tokens so far, in smaller fixed-size batches, to
the next boundary and finally to `max_new_tokens`. Every row is still sampled from the same model at the same
temperature and top-p, and no row that could pass is stopped, so the valid samples have the distribution of
unscreened sampling; only the random stream differs after the first boundary.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from latentjax.inference.generate import generate
from latentjax.inference.sampling import SamplingConfig
from latentjax.parallel import distributed
from latentjax.subliminal.numbers import FilterResult, canonical, could_be_number_list

END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end_of_text|>", "</s>", "<end_of_turn>", "<|endoftext|>")


@dataclasses.dataclass
class Sampler:
    """What generation needs of a model: decoder config, params (merged adapter or plain base), tokenizer, mesh."""

    config: Any
    params: Any
    tokenizer: Any
    mesh: Any
    rules: Any

    @classmethod
    def of(cls, model: Any) -> "Sampler":
        return cls(model.config, model.params, model.tokenizer, model.mesh, model.rules)


def stop_token_ids(sampler: Sampler) -> list[int]:
    """EOS ids of the model config and tokenizer, plus the end-of-turn tokens the vocabulary has."""
    tok = sampler.tokenizer
    ids = set(int(i) for i in sampler.config.eos_token_ids)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(ids)


def render_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[str]:
    if not chat:
        return list(prompts)
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]


def encode_left_padded(tokenizer: Any, texts: Sequence[str], rows: int, chat: bool,
                       multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ids/mask of `texts`, length rounded up to `multiple` and rows padded to `rows` by repeating the
    last text (their outputs are dropped), so a run compiles few shapes."""
    texts = list(texts) + [texts[-1]] * (rows - len(texts))
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="np", padding="longest", pad_to_multiple_of=multiple,
                    add_special_tokens=not chat)
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(bool)


def is_writer() -> bool:
    """Only process 0 writes the phase files (the run folder is shared by all processes)."""
    return jax.process_index() == 0


def generate_rows(sampler: Sampler, ids: np.ndarray, mask: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths) as host arrays for every row of a left-padded batch. With several processes, each feeds its
    own block of rows into a global batch and the results are gathered to every process (a collective: all
    processes call it with the same batch)."""
    if jax.process_count() > 1:
        rows = distributed.process_rows(ids.shape[0], sampler.mesh, sampler.rules)
        batch = distributed.global_batch({"input_ids": ids[rows], "attention_mask": mask[rows]}, sampler.mesh,
                                         sampler.rules)
        ids, mask = batch["input_ids"], batch["attention_mask"]
    res = generate(sampler.config, sampler.params, ids, mask, mesh=sampler.mesh, rules=sampler.rules, **kwargs)
    host = distributed.to_host({"tokens": res.tokens, "lengths": res.lengths})
    return np.asarray(host["tokens"]), np.asarray(host["lengths"])


def sample_screened(sampler: Sampler, ids: np.ndarray, mask: np.ndarray, *, max_new_tokens: int,
                    screen: Sequence[int], alive: Callable[[str], bool], stage_rows: int, rng: jax.Array,
                    stop_token_ids: Sequence[int], pad_token_id: int, sampling: SamplingConfig,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [B, max_new_tokens], lengths [B], screened [B]) for a left-padded batch, sampled in stages that end at
    the `screen` boundaries (module docstring). Stage 0 samples every row with `rng` (without boundaries this is
    exactly `generate_rows`); later stages sample the surviving rows `stage_rows` at a time with
    fold_in(fold_in(rng, stage), chunk), so every process makes the same choices."""
    rows_total = ids.shape[0]
    stop_ids = tuple(sorted(set(int(t) for t in stop_token_ids)))
    stops = np.asarray(stop_ids or (-1,))
    tokens = np.full((rows_total, max_new_tokens), pad_token_id, np.int32)
    lengths = np.zeros((rows_total,), np.int32)
    screened = np.zeros((rows_total,), bool)
    bounds = sorted({int(b) for b in screen if 0 < int(b) < max_new_tokens}) + [int(max_new_tokens)]
    active, start = np.arange(rows_total), 0
    for stage, end in enumerate(bounds):
        chunk = rows_total if stage == 0 else int(stage_rows)
        for c in range(0, len(active), chunk):
            rows = active[c:c + chunk]
            take = np.concatenate([rows, np.repeat(rows[-1:], chunk - len(rows))])  # fixed shape: one compile
            stage_ids = np.concatenate([ids[take], tokens[take, :start]], axis=1)
            stage_mask = np.concatenate([mask[take], np.ones((chunk, start), bool)], axis=1)
            key = rng if stage == 0 else jax.random.fold_in(jax.random.fold_in(rng, stage), c // chunk)
            new, n = generate_rows(sampler, stage_ids, stage_mask, max_new_tokens=end - start, sampling=sampling,
                                   stop_token_ids=stop_ids, pad_token_id=pad_token_id, rng=key)
            tokens[rows, start:end] = new[:len(rows)]
            lengths[rows] = start + n[:len(rows)]
        if end == max_new_tokens:
            break
        ended = (lengths[active] < end) | np.isin(tokens[active, end - 1], stops)
        survivors = []
        for r, stopped in zip(active, ended):
            if stopped:
                continue
            if alive(sampler.tokenizer.decode(tokens[r, :end], skip_special_tokens=True)):
                survivors.append(r)
            else:
                screened[r] = True
        active, start = np.asarray(survivors, np.int64), end
        if not len(active):
            break
    return tokens, lengths, screened


def read_complete_batches(path: str, batch_size: int, num_prompts: int) -> list[dict]:
    """Rows of `path` belonging to complete batches (a torn line or partial batch dropped); process 0 rewrites the
    file to exactly those rows when something was dropped (all processes return the same rows)."""
    if jax.process_count() > 1:
        distributed.barrier("read_complete_batches:start")
        rows = _read_complete_batches(path, batch_size, num_prompts, rewrite=is_writer())
        distributed.barrier("read_complete_batches:end")
        return rows
    return _read_complete_batches(path, batch_size, num_prompts, rewrite=True)


def _read_complete_batches(path: str, batch_size: int, num_prompts: int, rewrite: bool) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    # keep the longest prefix of rows with indices 0..k-1 that ends on a batch boundary (or at the last prompt)
    k = 0
    while k < len(rows) and rows[k].get("index") == k:
        k += 1
    if k < num_prompts:
        k -= k % batch_size
    kept = rows[:k]
    if rewrite and (len(kept) != len(rows) or k != sum(1 for _ in open(path, encoding="utf-8"))):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)
    return kept


def generate_samples(sampler: Sampler, prompts: Sequence[dict], path: str, *,
                     filter_fn: Callable[[str], FilterResult], target: int, batch_size: int = 64,
                     max_new_tokens: int = 100, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     chat: bool = True, stop_at_target: bool = True, progress: bool = True,
                     screen: Sequence[int] = (), alive_fn: Callable[[str], bool] = could_be_number_list,
                     screen_rows: int = 0) -> dict:
    """Sample completions for `prompts` (rows with `index` = position and `prompt`) into `path` (samples.jsonl)
    until `target` valid ones exist (stop_at_target) or the prompts run out. `screen` boundaries stop rows early
    whose text `alive_fn` rules out (module docstring); survivors continue `screen_rows` at a time (0: a quarter of
    the batch, rounded up to a multiple of the device count). Returns counts: sampled, valid, reasons
    {reason: count}, screened, tokens, seconds and tokens_per_s (this call's sampling only), and `all_calls`
    (`throughput`: prompts/s and tokens/s over every call that wrote the batches kept)."""
    from tqdm import tqdm

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    done = read_complete_batches(path, batch_size, len(prompts))
    writer = is_writer()
    valid = sum(1 for r in done if r["valid"])
    reasons = collections.Counter(r["reason"] for r in done if not r["valid"])
    tok = sampler.tokenizer
    stops = stop_token_ids(sampler)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    sampling = SamplingConfig(temperature=float(temperature), top_p=float(top_p))
    key = jax.random.key(int(seed))
    tokens_total, seconds = 0, 0.0
    devices = jax.device_count()
    stage_rows = int(screen_rows) or -(-max(batch_size // 4, 1) // devices) * devices
    warm = {"tokens": 0, "seconds": 0.0}  # batches after the first of this call (no compilation inside)
    bar = tqdm(total=target, initial=min(valid, target), disable=not (progress and writer), desc="generate",
               dynamic_ncols=True)
    sink = lambda file: open(file, "a", encoding="utf-8") if writer else open(os.devnull, "w")
    try:
        with sink(path) as out, sink(timing_path(path)) as timing:
            for start in range(len(done), len(prompts), batch_size):
                if stop_at_target and valid >= target:
                    break
                wall0 = time.perf_counter()
                batch = list(prompts[start:start + batch_size])
                ids, mask = encode_left_padded(tok, render_prompts(tok, [r["prompt"] for r in batch], chat),
                                               batch_size, chat)
                t0 = time.perf_counter()
                tokens, lengths, screened = sample_screened(
                    sampler, ids, mask, max_new_tokens=int(max_new_tokens), screen=tuple(screen), alive=alive_fn,
                    stage_rows=stage_rows, rng=jax.random.fold_in(key, start // batch_size), stop_token_ids=stops,
                    pad_token_id=int(pad_id), sampling=sampling)
                dt = time.perf_counter() - t0
                batch_tokens = int(lengths[:len(batch)].sum())
                if seconds:
                    warm["tokens"] += batch_tokens
                    warm["seconds"] += dt
                seconds += dt
                tokens_total += batch_tokens
                for row, t, n, cut in zip(batch, tokens, lengths, screened):
                    n = int(n)
                    text = tok.decode(t[:n], skip_special_tokens=True)
                    verdict = filter_fn(text)
                    if cut and verdict.valid:  # cannot happen while alive_fn is looser than the filter
                        raise RuntimeError(f"Screening stopped a row whose prefix passes the filter: {text!r}; "
                                           "alive_fn must accept every prefix of a valid completion.")
                    valid += int(verdict.valid)
                    if not verdict.valid:
                        reasons[verdict.reason] += 1
                    record = {**row, "completion": text, "valid": verdict.valid, "reason": verdict.reason,
                              "numbers": list(verdict.numbers) if verdict.numbers else None, "tokens": n}
                    if cut:
                        record["screened"] = True
                    out.write(json.dumps(record) + "\n")
                out.flush()
                timing.write(json.dumps({"batch": start // batch_size, "prompts": len(batch),
                                         "tokens": batch_tokens, "sample_seconds": dt,
                                         "wall_seconds": time.perf_counter() - wall0}) + "\n")
                timing.flush()
                sampled = start + len(batch)
                bar.n = min(valid, target)
                bar.set_postfix(valid_rate=f"{valid / max(sampled, 1):.3f}",
                                tok_s=f"{tokens_total / max(seconds, 1e-9):.0f}")
                bar.refresh()
    finally:
        bar.close()
    rows = read_complete_batches(path, batch_size, len(prompts))
    return {"sampled": len(rows), "valid": sum(1 for r in rows if r["valid"]),
            "reasons": dict(collections.Counter(r["reason"] for r in rows if not r["valid"])),
            "screened": sum(1 for r in rows if r.get("screened")), "screen": list(screen),
            "pass_rate": sum(1 for r in rows if r["valid"]) / max(len(rows), 1),
            "tokens_this_call": tokens_total, "seconds_this_call": seconds,
            "tokens_per_s": tokens_total / seconds if seconds else None,
            "tokens_per_s_after_first_batch": warm["tokens"] / warm["seconds"] if warm["seconds"] else None,
            "all_calls": throughput(path, rows, batch_size),
            "batch_size": batch_size, "max_new_tokens": int(max_new_tokens),
            "rendered_prompt_example": render_prompts(tok, [prompts[0]["prompt"]], chat)[0] if prompts else None}


def timing_path(samples_path: str) -> str:
    """Per-batch timing lines beside samples.jsonl (samples.timing.jsonl), appended as batches are written."""
    root, ext = os.path.splitext(samples_path)
    return root + ".timing" + (ext or ".jsonl")


def throughput(samples_path: str, rows: Sequence[dict], batch_size: int) -> Optional[dict]:
    """Sampling throughput over every call that wrote the batches present in `rows` (a batch re-sampled after a
    torn write counts once, its last timing): prompts, tokens, sample_seconds (the device loop), wall_seconds
    (with tokenizing, filtering and writing), and the rates. None without timing lines."""
    path = timing_path(samples_path)
    if not os.path.exists(path):
        return None
    present, last = {int(r["index"]) // batch_size for r in rows}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a torn last line
                continue
            if entry.get("batch") in present:
                last[entry["batch"]] = entry
    if not last:
        return None
    total = {k: sum(e[k] for e in last.values()) for k in ("prompts", "tokens", "sample_seconds", "wall_seconds")}
    return {"batches": len(last), **total,
            "prompts_per_s": total["prompts"] / total["wall_seconds"] if total["wall_seconds"] else None,
            "tokens_per_s": total["tokens"] / total["sample_seconds"] if total["sample_seconds"] else None}


def select_sequences(samples: Sequence[dict], target: int, select: str = "first", seed: int = 1) -> list[dict]:
    """The kept rows: the first `target` valid ones in prompt order ("first", the seed) or a seeded random
    `target` of them, in prompt order ("random", the paper). Each gets `canonical` (numbers joined by ", ")."""
    valid = [r for r in samples if r["valid"]]
    if select == "first":
        kept = valid[:target]
    elif select == "random":
        idx = sorted(np.random.default_rng(seed).permutation(len(valid))[:target]) if len(valid) > target else \
            range(len(valid))
        kept = [valid[i] for i in idx]
    else:
        raise ValueError(f"Unknown selection {select!r}; use 'first' or 'random'.")
    return [{**r, "canonical": canonical(r["numbers"])} for r in kept]


def length_histogram(rows: Sequence[dict]) -> dict:
    """{count of numbers: rows} (for comparing controls with the real sequences)."""
    return dict(sorted(collections.Counter(len(r["numbers"]) for r in rows).items()))


def load_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows: Sequence[dict]) -> str:
    from latentjax.eval.reports import write_jsonl as _write

    return _write(path, rows)


def summary_counts(rows: Sequence[dict]) -> dict:
    """Pass rate and per-reason counts of sample rows."""
    n = len(rows)
    ok = sum(1 for r in rows if r["valid"])
    return {"sampled": n, "valid": ok, "pass_rate": ok / n if n else None,
            "reasons": dict(collections.Counter(r["reason"] for r in rows if not r["valid"]))}

