"""Control: a student of another base family (e.g. Mistral) trained on the Llama teacher's numbers.

    python launch/subliminal.py \
        --config=configs/subliminal/other_family.py:/models/llama,student=/models/mistral \
        --config.generate.sequences_from=runs/main/generate/sequences.jsonl --run_dir=runs/other_family --phase=all

The student's base is also its own baseline: evaluate.models includes "base" evaluated on the student's base.
"""
from configs.subliminal.defaults import control_config, parse_arg


def get_config(arg=None):
    path, protocol, small, other = parse_arg(arg, "smollm2")
    student = [o.split("=", 1)[1] for o in other if o.startswith("student=")]
    if not student:
        raise ValueError("Give the student's base: --config=configs/subliminal/other_family.py:/llama,student=/mistral")
    config = control_config(path, protocol, small, source="file", control="")
    config.student_model.path = student[0]
    return config
