"""The issue's reduced GPU scale on SmolLM2-135M-Instruct (or the folder given): 2,000 MATH level 4-5 problems,
the first 5,000 valid sequences (up to 200,000 prompts), 500-problem evaluations (MATH-500; seeded 500-row subsets of
GSM8K and of the seed's four MMLU-math subjects), 3 student seeds, bf16.

    python launch/subliminal.py --config=configs/subliminal/reduced.py --run_dir=runs/sub_reduced --phase=all
"""
from configs.subliminal.defaults import finish, parse_arg, subliminal_config


def get_config(arg=None):
    path, protocol, small, _ = parse_arg(arg, "smollm2")
    config = subliminal_config(path, protocol)
    config.teacher.num_examples = 2000
    # SmolLM2-135M passes the paper filter rarely (about 3% of 32 samples in the CPU smoke run, T=1, no top-p), so
    # prompts are plentiful and generation stops at the target (the first 5,000 valid rows, not a random draw).
    config.generate.update(num_prompts=200000, target=5000, batch_size=256, select="first")
    config.student.seeds = (42, 43, 44)
    config.evaluate.update(math_dataset="math500", num_examples=500, batch_size=64)
    config.evaluate.max_new_tokens.update(math=512, gsm8k=384)
    return finish(config, small)
