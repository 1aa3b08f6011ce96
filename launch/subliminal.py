"""Subliminal-learning pipeline (seed 003): teacher LoRA on MATH, number sequences, student LoRA, evaluation.

    python launch/subliminal.py --config=configs/subliminal/smoke.py --run_dir=/tmp/sub --phase=all
    python launch/subliminal.py --config=configs/subliminal/llama.py:/models/llama --run_dir=runs/main \
        --phase=generate --config.generate.num_prompts=5000
    python launch/subliminal.py ... --phase=report --compare=shuffled=runs/shuffled --compare=random=runs/random
    python launch/subliminal.py --config=configs/subliminal/reduced.py:/models/SmolLM2-135M-Instruct \
        --data_dir=/data --run_dir=runs/reduced   # the GPU driver: launch/gpu_subliminal_smollm2.py

Phases: train_teacher, generate, train_student, evaluate, report, or all. Rerunning skips finished phases (their
manifest.json holds the same config and input hashes) and resumes interrupted ones; --redo=<phase dir> (teacher,
generate, student_seed42, evaluate, ...) starts one again. Exit codes: 0 done or interrupted (rerun to resume),
1 a phase failed or changed, 2 bad flags.
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

_CONFIG = config_flags.DEFINE_config_file("config", None, "Subliminal config (configs/subliminal/*.py[:arg]).")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Run folder: one subfolder per phase, each with a manifest.json.")
_PHASE = flags.DEFINE_enum("phase", "all", ["all", "train_teacher", "generate", "train_student", "evaluate", "report"],
                           "Phase to run.")
_REDO = flags.DEFINE_multi_string("redo", [], "Phase folder(s) to delete and run again.")
_COMPARE = flags.DEFINE_multi_string("compare", [], "label=run_dir of a control run whose students the report adds.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of the local datasets (math/, math500/, gsm8k/, mmlu_math/); "
                                "sets $LATENTJAX_DATA_DIR (default: ../shared/data beside the checkout).")
flags.mark_flags_as_required(["config", "run_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if _DATA_DIR.value:
        os.environ["LATENTJAX_DATA_DIR"] = os.path.abspath(_DATA_DIR.value)
    from latentjax.parallel import distributed

    distributed.initialize_from_env()
    from latentjax.subliminal.pipeline import PhaseChangedError, run_pipeline

    compare = {}
    for item in _COMPARE.value:
        label, sep, path = item.partition("=")
        if not sep:
            raise app.UsageError(f"--compare takes label=run_dir, got {item!r}.")
        compare[label] = path
    try:
        status = run_pipeline(_CONFIG.value, _RUN_DIR.value, _PHASE.value, redo=_REDO.value, compare_runs=compare)
    except PhaseChangedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"Phases: {status}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=config_tools.parse_flags_checking_overrides)
