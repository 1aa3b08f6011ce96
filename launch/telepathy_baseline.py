"""Text baselines of a telepathy config (issue 5): the receiver or the sender reading the text, few-shot, text relay.

    python launch/telepathy_baseline.py --config=configs/telepathy/sst2.py --baseline=receiver_text \
        --out=runs/sst2_baselines --config.model.receiver.path=/models/Mistral-7B-Instruct-v0.3
    python launch/telepathy_baseline.py --config=configs/telepathy/tiny.py --baseline=text_relay --out=/tmp/b \
        --num_examples=8 --config.baseline.relay_summary_tokens=20

Scored like the bridge's evaluator on the bridge's final evaluation rows (config.eval); writes
`{out}/{task}_{baseline}.jsonl` and `.summary.json` and `{out}/config.json`, prints accuracy with its Wilson 95%
interval. Several baselines: `--baseline=receiver_text,sender_text,few_shot,text_relay`. Prompt tuning trains
through launch/train.py with configs/telepathy/prompt_tuning.py. Exit 2 on a mistyped --config.key.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from latentjax.train import config_tools  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Telepathy config file (configs/telepathy/*.py[:arg]).")
_BASELINE = flags.DEFINE_string("baseline", None, "Comma-separated: receiver_text, sender_text, few_shot, text_relay.")
_OUT = flags.DEFINE_string("out", None, "Output folder for the JSONL / summary files.")
_NUM = flags.DEFINE_integer("num_examples", 0, "Evaluation rows (0 = config.eval.final_num_samples; 0 there = all).")
flags.mark_flags_as_required(["config", "baseline", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from latentjax.bridge.baselines import BASELINES, evaluate_baseline

    kinds = [k.strip() for k in _BASELINE.value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BASELINES]
    if unknown or not kinds:
        print(f"error: unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}.", file=sys.stderr)
        sys.exit(2)
    config = _CONFIG.value
    config_tools.save_config(config, _OUT.value)
    rows, models = [], {}  # models loaded once for all the baselines
    for kind in kinds:
        s = evaluate_baseline(config, kind, _OUT.value, _NUM.value or None, cache=models)
        rows.append((kind, s))
    print(f"\n{'baseline':<15} {'metric':<14} {'accuracy':>9}  {'95% CI':<15} {'n':>5}")
    for kind, s in rows:
        print(f"{kind:<15} {s['primary_metric']:<14} {s['accuracy']:>9.3f}  "
              f"[{s['ci95_low']:.3f}, {s['ci95_high']:.3f}] {s['n']:>5}")
        if "label_scoring" in s and s["primary_metric"] != "label_scoring":
            ls = s["label_scoring"]
            print(f"{'':<15} {'label_scoring':<14} {ls['accuracy']:>9.3f}  [{ls['ci95'][0]:.3f}, {ls['ci95'][1]:.3f}]")


if __name__ == "__main__":
    app.run(main, flags_parser=config_tools.parse_flags_checking_overrides)
