"""The one training entry point.

    python launch/train.py --config=configs/tiny_lm.py --workdir=/tmp/run [--config.train.steps=100 ...]

Builds the mesh from config.mesh.shape, the experiment from the registry entry config.experiment, and runs the
shared loop (latentjax.train.loop). Running again with the same --workdir resumes exactly where it stopped.
Exit codes: 0 done or preempted (SIGTERM, checkpoint saved), 1 non-finite loss or a refused checkpoint,
2 bad flags (e.g. a mistyped --config.key).
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # `latentjax` and `configs` importable without installing

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from latentjax.train import config_tools  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config.json, metrics.jsonl, tb/, checkpoints/.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    from latentjax.parallel import distributed

    distributed.initialize_from_env()  # multi-process runs (SLURM, LATENTJAX_* variables); else a no-op
    from latentjax.parallel.mesh import describe, mesh_from_config
    from latentjax.train import loop, registry
    from latentjax.train.checkpoint import CheckpointMismatchError

    config, workdir = _CONFIG.value, _WORKDIR.value
    mesh, _ = mesh_from_config(config.mesh)
    if distributed.is_main_process():
        print(f"Experiment {config.experiment!r} on mesh {describe(mesh)}.", file=sys.stderr)
    experiment = registry.get(config.experiment)(config, mesh)
    try:
        result = loop.train(config, experiment, mesh, workdir)
    except (loop.NonFiniteLossError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if not distributed.is_main_process():
        return
    if result.preempted:
        print(f"Preempted: checkpoint of step {result.step} saved in {workdir}; rerun the same command to resume.",
              file=sys.stderr)
    else:
        print(f"Done: step {result.step}, workdir {workdir}.", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=config_tools.parse_flags_checking_overrides)
