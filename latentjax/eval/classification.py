"""Scoring for the Telepathy classification tasks and the passkey task (shared/spec/telepathy.md "Evaluation").

Seed rules (telepathy_reference.md sections 3 and 5, LatentWire `telepathy/` scripts @dcc40131):
- Generated label: the decoded new tokens, stripped and lower-cased, are correct iff the gold label word occurs
  in them as a substring (`label_in_output`). AG News class `science` also accepts `technology`, `tech`,
  `sci/tech`, `scitech`; a Banking77 intent is also accepted with `_` read as a space (`label_aliases`).
- Passkey: `pred_digits` = all digit characters of the output concatenated; exact iff the code occurs in the
  output or `pred_digits` equals it; digit accuracy = positions j < len(code) where pred_digits[j] == code[j],
  summed over samples and divided by len(code) x N (`passkey_score`, `passkey_digit_accuracy`).

latentjax additions the spec asks for: a parsed prediction for every output (`parse_label`, for the confusion
matrix and the JSONL dump), label-scoring accuracy (argmax of the answer log-likelihood over the label set,
`label_scoring_predictions`), per-class accuracy and a confusion matrix.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

# AG News "science" accepts these words (eval_telepathy_agnews.py and the text-relay baseline).
AGNEWS_SCIENCE_ALIASES = ("science", "technology", "tech", "sci/tech", "scitech")


def label_aliases(label: str, extra: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """Lower-cased strings that count as `label` in an output: the label itself, its `_`-as-space form
    (the Banking77 rule), and `extra[label]` (e.g. {"science": AGNEWS_SCIENCE_ALIASES})."""
    low = label.lower()
    out = [low]
    if "_" in low:
        out.append(low.replace("_", " "))
    if extra and label in extra:
        out.extend(a.lower() for a in extra[label])
    return tuple(dict.fromkeys(out))


def label_in_output(output: str, aliases: Sequence[str] | str) -> bool:
    """The seed's rule: any alias occurs in the stripped, lower-cased output."""
    if isinstance(aliases, str):
        aliases = (aliases,)
    text = (output or "").strip().lower()
    return any(a.lower() in text for a in aliases)


def parse_label(output: str, label_alias_sets: Sequence[Sequence[str]]) -> Optional[int]:
    """Index of the label whose alias occurs earliest in the lower-cased output (longest alias on a tie), or None.

    The seed has no such rule (it only asks "is the gold word in the output?"), so an output naming two labels is
    correct for either under `label_in_output` but gets one parsed prediction here; the JSONL keeps both.
    """
    text = (output or "").strip().lower()
    best: Optional[tuple[int, int, int]] = None  # (position, -length, label index)
    for idx, aliases in enumerate(label_alias_sets):
        for alias in aliases:
            pos = text.find(alias.lower())
            if pos >= 0:
                key = (pos, -len(alias), idx)
                if best is None or key < best:
                    best = key
    return None if best is None else best[2]


# ----------------------------------------------------------------------------------------------------------------
# Passkey
# ----------------------------------------------------------------------------------------------------------------

def passkey_score(output: str, code: str | int) -> tuple[bool, int]:
    """(exact, digits_right) for one passkey sample, by the seed's rule (see module docstring)."""
    code = str(code)
    text = output or ""
    pred_digits = "".join(re.findall(r"\d", text))
    exact = code in text or pred_digits == code
    digits_right = sum(1 for j, ch in enumerate(code) if j < len(pred_digits) and pred_digits[j] == ch)
    return exact, digits_right


def passkey_digit_accuracy(outputs: Sequence[str], codes: Sequence[str | int]) -> tuple[float, float]:
    """(exact-match rate, digit accuracy) over samples: sum of right digits / (len(code) x N)."""
    if len(outputs) != len(codes) or not codes:
        raise ValueError("need as many outputs as codes, at least one")
    scores = [passkey_score(o, c) for o, c in zip(outputs, codes)]
    exact = sum(e for e, _ in scores) / len(scores)
    digits = sum(d for _, d in scores) / sum(len(str(c)) for c in codes)
    return exact, digits


# ----------------------------------------------------------------------------------------------------------------
# Label scoring, per-class accuracy, confusion matrix
# ----------------------------------------------------------------------------------------------------------------

def label_scoring_predictions(loglik: Iterable, num_tokens: Optional[Iterable] = None) -> np.ndarray:
    """[N, C] log-likelihoods of each label's answer tokens -> [N] predicted label ids (argmax; ties -> lowest id).

    With `num_tokens` ([C] or [N, C] answer lengths) the mean log-likelihood per token is compared instead of
    the sum; the spec's default is the sum.
    """
    ll = np.asarray(loglik, dtype=np.float64)
    if ll.ndim != 2:
        raise ValueError(f"loglik must be [N, C], got shape {ll.shape}")
    if num_tokens is not None:
        ll = ll / np.broadcast_to(np.asarray(num_tokens, dtype=np.float64), ll.shape)
    if np.isnan(ll).any():
        raise ValueError("loglik contains nan")
    return ll.argmax(axis=1)


def _labels_array(values: Iterable[Optional[int]]) -> np.ndarray:
    """Label ids with None (nothing parsed) as -1."""
    return np.asarray([-1 if v is None else int(v) for v in values], dtype=np.int64)


def confusion_matrix(golds: Iterable[int], preds: Iterable[Optional[int]], num_classes: int,
                     unparsed_column: bool = True) -> np.ndarray:
    """Counts [C, C+1]: row = gold, column = prediction; the last column counts predictions that are None / -1
    (no label parsed). With `unparsed_column=False` the matrix is [C, C] and unparsed predictions are refused."""
    g, p = _labels_array(golds), _labels_array(preds)
    if g.shape != p.shape:
        raise ValueError(f"{g.size} golds and {p.size} predictions")
    if ((g < 0) | (g >= num_classes)).any():
        raise ValueError("gold label out of range")
    if (p >= num_classes).any() or (p < -1).any():
        raise ValueError("predicted label out of range")
    if not unparsed_column and (p == -1).any():
        raise ValueError("unparsed predictions need unparsed_column=True")
    cols = num_classes + 1 if unparsed_column else num_classes
    p = np.where(p == -1, num_classes, p)
    matrix = np.zeros((num_classes, cols), dtype=np.int64)
    np.add.at(matrix, (g, p), 1)
    return matrix


def per_class_accuracy(golds: Iterable[int], correct: Iterable, num_classes: int) -> list[dict]:
    """[{"label": c, "n": items with gold c, "correct": ..., "accuracy": ... (nan if none)}] for c in 0..C-1.

    Takes the correct vector rather than predictions, so it serves both the substring rule (where an output may be
    correct without a unique parsed label) and label scoring (correct = pred == gold).
    """
    g = _labels_array(golds)
    c = np.asarray(list(correct), dtype=bool)
    if g.shape != c.shape:
        raise ValueError(f"{g.size} golds and {c.size} correct flags")
    out = []
    for label in range(num_classes):
        mask = g == label
        n, k = int(mask.sum()), int(c[mask].sum())
        out.append({"label": label, "n": n, "correct": k, "accuracy": k / n if n else float("nan")})
    return out


def score_label_generations(outputs: Sequence[str], golds: Sequence[int], labels: Sequence[str],
                            extra_aliases: Mapping[str, Sequence[str]] | None = None
                            ) -> tuple[np.ndarray, list[Optional[int]]]:
    """Seed-rule correctness and the parsed prediction for a batch of generated outputs.

    `labels` are the verbalizers in label-id order (e.g. ["world", "sports", "business", "science"]); returns
    (correct [N] bool, predictions [N] label id or None).
    """
    if len(outputs) != len(golds):
        raise ValueError(f"{len(outputs)} outputs and {len(golds)} golds")
    alias_sets = [label_aliases(label, extra_aliases) for label in labels]
    correct = np.asarray([label_in_output(o, alias_sets[int(g)]) for o, g in zip(outputs, golds)], dtype=bool)
    return correct, [parse_label(o, alias_sets) for o in outputs]
