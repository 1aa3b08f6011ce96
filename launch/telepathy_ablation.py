"""Token ablation of the Telepathy bridge for any task config: one bridge per K, trained and evaluated through the
shared loop, then a table (ablation.md, ablation.json) and a plot of accuracy vs K with Wilson error bars
(ablation.png) in --out.

    python launch/telepathy_ablation.py --config=configs/telepathy/banking77.py --out=runs/banking77_ablation \
        --config.model.sender.path=/models/Llama-3.1-8B-Instruct \
        --config.model.receiver.path=/models/Mistral-7B-Instruct-v0.3
    python launch/telepathy_ablation.py --config=configs/telepathy/passkey.py --tokens=16,32 --out=runs/pk_abl

Every `--config.a.b=v` override applies to each run (mistyped keys are refused). Runs live in `--out/k{K}` and
resume or are skipped when started again with the same --out. --metric picks the accuracy plotted
(label_scoring or generation; default: label scoring where the task has labels, else generation exact match).
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

_CONFIG = config_flags.DEFINE_config_file("config", None, "Bridge task config (configs/telepathy/<task>.py[:arg]).")
_OUT = flags.DEFINE_string("out", None, "Output folder: k{K}/ run folders, ablation.md/.json/.png.")
_TOKENS = flags.DEFINE_list("tokens", ["16", "32", "64", "128"], "Numbers of soft tokens K, comma-separated.")
_METRIC = flags.DEFINE_enum("metric", None, ["label_scoring", "generation"], "Accuracy to tabulate and plot.")
flags.mark_flags_as_required(["config", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from latentjax.bridge.ablation import run_ablation

    try:
        tokens = [int(k) for k in _TOKENS.value]
    except ValueError:
        raise app.UsageError(f"--tokens must be integers, got {','.join(_TOKENS.value)}.")
    config = _CONFIG.value
    if config.experiment != "bridge":
        raise app.UsageError(f"--config must be a bridge config (experiment 'bridge'), got {config.experiment!r}.")

    def report(row: dict) -> None:
        extra = f", digit accuracy {100 * row['digit_accuracy']:.1f}%" if "digit_accuracy" in row else ""
        print(f"K={row['tokens']}: {row['metric']} {100 * row['accuracy']:.1f}% "
              f"[{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}] on {row['n']}{extra} "
              f"(train {row['train_s']:.0f} s, eval {row['eval_s']:.0f} s)", file=sys.stderr, flush=True)

    rows = run_ablation(config, tokens, _OUT.value, metric=_METRIC.value, on_row=report)
    from latentjax.bridge.ablation import write_report

    paths = write_report(rows, _OUT.value, config.task.name, base_config=config)
    print(paths["table"])
    print(f"Wrote {paths['markdown']}, {paths['json']}, {paths['plot']}.")


if __name__ == "__main__":
    app.run(main, flags_parser=config_tools.parse_flags_checking_overrides)
