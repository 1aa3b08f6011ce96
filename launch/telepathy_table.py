"""Print (and write) one table of every Telepathy result under a runs folder: bridge, text relay, receiver text,
sender text, few-shot and prompt tuning per task, for both metrics, plus the token ablations
(latentjax.bridge.results; the folder layout written by launch/run_all_experiments.sh).

    python launch/telepathy_table.py --runs=runs/telepathy      # writes runs/telepathy/results.md and .json
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder holding {task}_bridge/, {task}_baselines/, ...")
    args = parser.parse_args()
    if not os.path.isdir(args.runs):
        parser.error(f"--runs folder {args.runs} does not exist.")
    from latentjax.bridge.results import collect, results_markdown
    from latentjax.eval.reports import atomic_write_text, write_json

    collected = collect(args.runs)
    text = results_markdown(collected)
    atomic_write_text(os.path.join(args.runs, "results.md"), text)
    write_json(os.path.join(args.runs, "results.json"), collected)
    print(text)


if __name__ == "__main__":
    main()
