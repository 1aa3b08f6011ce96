"""Control: the main run's kept sequences with the numbers permuted within each row (format kept); no teacher.
Students only; compare from the main run with --compare shuffled=<this run_dir>.

    python launch/subliminal.py --config=configs/subliminal/shuffled.py:/models/llama \
        --config.generate.sequences_from=runs/main/generate/sequences.jsonl --run_dir=runs/shuffled --phase=all
    (variant across rows: --config.generate.control=shuffle_global; ",smoke" after the path shrinks it)
"""
from configs.subliminal.defaults import control_config, parse_arg


def get_config(arg=None):
    path, protocol, small, _ = parse_arg(arg, "smollm2")
    return control_config(path, protocol, small, source="file", control="shuffle_within")
