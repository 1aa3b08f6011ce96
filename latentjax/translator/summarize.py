"""Summarize translator evaluation dumps (the collapse detector).

    python -m latentjax.translator.summarize RUN/eval/step_0001000/gsm8k_soft_only.jsonl [more.jsonl ...]
    python -m latentjax.translator.summarize RUN/eval          # every *.jsonl below, in path order

Prints, per file: items, accuracy with its Wilson interval, invalid outputs (no '#### N'), the number of distinct
extracted answers and the most frequent ones (a near-constant '#### 1' / '#### 10' is collapse), and the
target-alone / source-alone accuracy when the dump has them.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from latentjax.eval.reports import read_jsonl
from latentjax.translator.evaluate import collapse_stats


def summarize_file(path: str, top: int = 5) -> dict:
    records = read_jsonl(path)
    out = {"path": path, "bridged": collapse_stats(records, top=top)}
    for who in ("target", "source"):
        if records and f"{who}_correct" in records[0]:
            rows = [{"extracted": r[f"{who}_extracted"], "correct": r[f"{who}_correct"]} for r in records]
            out[f"{who}_alone"] = collapse_stats(rows, top=top)
    return out


def format_summary(s: dict) -> str:
    b = s["bridged"]
    lines = [f"{s['path']}",
             f"  n={b['n']}  accuracy={b['accuracy']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]  "
             f"invalid={b['invalid']} ({b['invalid_rate']:.1%})  distinct answers={b['distinct_answers']}",
             "  most frequent: " + ", ".join(f"{a!r} x{c}" for a, c in b["top_outputs"])]
    for who in ("target", "source"):
        if f"{who}_alone" in s:
            w = s[f"{who}_alone"]
            lines.append(f"  {who} alone: accuracy={w['accuracy']:.3f} invalid={w['invalid']}")
    return "\n".join(lines)


def expand(paths) -> list[str]:
    files = []
    for p in paths:
        files.extend(sorted(glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True)) if os.path.isdir(p)
                     else [p])
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    files = expand(args.paths)
    if not files:
        print("No JSONL files found.", file=sys.stderr)
        return 1
    for f in files:
        print(format_summary(summarize_file(f, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
