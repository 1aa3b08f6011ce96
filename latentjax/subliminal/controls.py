"""Control datasets made from real sequence rows, keeping each row's prompt, format and count of numbers.

- `shuffle_within`: the digit runs of each completion permuted (separators, brackets, final period kept).
- `shuffle_global`: all rows' numbers pooled and dealt back at random, each row keeping its count and format.
- `random_values`: every number replaced by a uniform integer in [low, high] (no teacher involved).

Rows are dicts with `completion` (raw text) and `numbers`; the result has both updated (and `canonical`), plus
`control` naming the transform. All randomness comes from `seed`.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from latentjax.subliminal.numbers import canonical

_RUN = re.compile(r"\d+")


def _refill(text: str, values: Sequence[int]) -> str:
    it = iter(values)
    return _RUN.sub(lambda m: str(next(it)), text)


def _with(row: dict, values: list[int], control: str) -> dict:
    return {**row, "completion": _refill(row["completion"], values), "numbers": list(values),
            "canonical": canonical(values), "control": control}


def shuffle_within(rows: Sequence[dict], seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for row in rows:
        values = [int(m) for m in _RUN.findall(row["completion"])]
        rng.shuffle(values)
        out.append(_with(row, values, "shuffle_within"))
    return out


def shuffle_global(rows: Sequence[dict], seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    counts = [len(_RUN.findall(r["completion"])) for r in rows]
    pool = [int(m) for r in rows for m in _RUN.findall(r["completion"])]
    rng.shuffle(pool)
    out, start = [], 0
    for row, n in zip(rows, counts):
        out.append(_with(row, pool[start:start + n], "shuffle_global"))
        start += n
    return out


def random_values(rows: Sequence[dict], seed: int = 1, low: int = 0, high: int = 999) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for row in rows:
        n = len(_RUN.findall(row["completion"]))
        out.append(_with(row, [rng.randint(low, high) for _ in range(n)], "random_values"))
    return out


CONTROLS: dict[str, Callable] = {"shuffle_within": shuffle_within, "shuffle_global": shuffle_global,
                                 "random_values": random_values}


def apply_control(name: str, rows: Sequence[dict], seed: int = 1) -> list[dict]:
    """`name` = "" (rows unchanged) or a key of CONTROLS."""
    if not name:
        return list(rows)
    if name not in CONTROLS:
        raise ValueError(f"Unknown control {name!r}; known: {', '.join(CONTROLS)}.")
    return CONTROLS[name](rows, seed)
