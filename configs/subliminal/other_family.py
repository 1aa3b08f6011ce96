"""Control: a student of another base family (e.g. Mistral) trained on the Llama teacher's numbers.

    python launch/subliminal.py \
        --config=configs/subliminal/other_family.py:/models/llama,student=/models/mistral \
        --config.generate.sequences_from=runs/main/generate/sequences.jsonl --run_dir=runs/other_family --phase=all

The baseline is the student's own base ("student_base"), evaluated on the same items.
"""
from configs.subliminal.defaults import control_config, parse_arg


def get_config(arg=None):
    path, protocol, small, other = parse_arg(arg, "smollm2")
    student = [o.split("=", 1)[1] for o in other if o.startswith("student=")]
    if not student:
        raise ValueError("Give the student's base: --config=configs/subliminal/other_family.py:/llama,student=/mistral")
    config = control_config(path, protocol, small, source="file", control="")
    config.student_model.path = student[0]
    config.evaluate.models = ("student_base", "student")  # the student family's own base is the baseline
    config.report.baseline = "student_base"
    return config
