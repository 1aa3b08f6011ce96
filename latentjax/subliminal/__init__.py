"""Subliminal learning (seed 003): teacher LoRA on MATH -> teacher writes number sequences -> fresh student LoRA on
those numbers -> MATH / GSM8K / MMLU-math evaluation with statistics and controls.

    numbers.py         prompt builders (seed and paper designs) and the two validity filters
    controls.py        shuffled / random-value transforms of sequence rows
    generate_phase.py  batched sampling until the target count of valid sequences, resumable JSONL
    evaluate_phase.py  MATH / GSM8K (greedy generation) and MMLU-math (letter log-probabilities)
    report.py          statistics: Wilson intervals, McNemar / z-tests vs the base, Holm, table and plot
    pipeline.py        the phases (train_teacher, generate, train_student, evaluate, report) with manifests
    tiny.py            a tiny random model with SmolLM2's tokenizer that writes digits (smoke tests)

Entry point: launch/subliminal.py; configs in configs/subliminal/. Spec: shared/spec/subliminal.md.
"""
