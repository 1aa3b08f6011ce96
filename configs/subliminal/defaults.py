"""Shared builder of subliminal-learning configs (spec: shared/spec/subliminal.md, seed 003).

`subliminal_config(path, protocol)` gives the seed's training hyperparameters (LoRA r 128 / alpha 256 / dropout
0.05 on all seven projections; lr 1e-5, micro-batch 4 x accumulation 8, warmup 100, weight decay 0.01, clip 1.0,
linear decay, seed 42, bf16; teacher 3 epochs on MATH train levels 4-5 with 5% validation (evaluated every 50
steps; the adapter of the lowest validation loss is exported), student 10 epochs with
10% validation) and the number-generation protocol:

- protocol="paper" (default): paper prompts (3-8 seeds in 100..999, combined phrasing), T=1.0 without top-p,
  paper filter, 10,000 drawn at random from the valid samples of 30,000 prompts, chat template, raw completions,
  loss on the completion only.
- protocol="seed": the seed repository (3 seeds in 0..999, one template), top-p 0.95, seed filter, the first
  10,000 valid kept, plain "User:/Assistant:" text, numbers re-joined "a, b, c", loss on the whole text.

Every key can be overridden on the command line: --config.generate.num_prompts=5000.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from configs import base
from latentjax.lora.experiment import lora_section, model_section

SEED_MMLU_SUBJECTS = ("abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics")


def training_section(epochs: float, eval_fraction: float, seq_len: int) -> ConfigDict:
    opt = base.optimizer(lr=1e-5, warmup_steps=100, decay="linear")
    opt.end_lr_ratio = 0.0  # HF Trainer's linear schedule decays to 0
    opt.weight_decay, opt.clip_norm = 0.01, 1.0
    return ConfigDict(dict(
        epochs=float(epochs), steps=0,  # steps > 0 overrides epochs
        train=base.train(steps=0, batch_size=32, grad_accum=8, compute_dtype="bfloat16"),
        optimizer=opt, checkpoint=base.checkpoint(every=500, keep_last=1, keep_best=0), logging=base.logging(10),
        eval_every=500, seq_len=int(seq_len), buckets=(), eval_fraction=float(eval_fraction), eval_batch_size=8,
        max_eval_examples=0, export="last"))  # export: "last" step or "best" held-out loss


def parse_arg(arg, default_path: str = "") -> tuple[str, str, bool, list]:
    """`path[,seed|paper][,smoke][,other]` -> (path, protocol, smoke, other parts). An empty path means the
    offline SmolLM2 copy when `default_path` is "smollm2"."""
    parts = [p for p in (arg or "").split(",")]
    path = parts[0] if parts and parts[0] not in ("seed", "paper", "smoke") else ""
    rest = parts[1:] if path or (parts and parts[0] == "") else parts
    protocol = "seed" if "seed" in rest else "paper"
    small = "smoke" in rest
    other = [p for p in rest if p and p not in ("seed", "paper", "smoke")]
    if not path and default_path == "smollm2":
        from latentjax.convert.gguf import smollm2_path

        path = smollm2_path()
    return path or default_path, protocol, small, other


def finish(config: ConfigDict, small: bool) -> ConfigDict:
    return smoke(config) if small else config


def subliminal_config(path: str, protocol: str = "paper") -> ConfigDict:
    if protocol not in ("paper", "seed"):
        raise ValueError(f"protocol must be 'paper' or 'seed', got {protocol!r}.")
    seed_like = protocol == "seed"
    teacher = training_section(3, 0.05, 2048)
    teacher.update(enabled=True, dataset="math", split="train", levels=(4, 5), num_examples=0,
                   format="plain" if seed_like else "chat", completion_only=not seed_like)
    teacher.update(export="best", eval_every=50)  # the adapter of the best-validation step (issue 7)
    student = training_section(10, 0.1, 512)
    student.update(seeds=(42,), completion="canonical" if seed_like else "raw",
                   format="plain" if seed_like else "chat", completion_only=not seed_like)
    generate = ConfigDict(dict(
        source="teacher", sequences_from="", control="", control_seed=1,
        design=protocol, num_prompts=30000, target=10000, prompt_seed=42, sample_seed=0, batch_size=64,
        max_new_tokens=100, temperature=1.0, top_p=0.95 if seed_like else 1.0, chat=not seed_like,
        filter=protocol, strip_outer_whitespace=True, banned=(), select="first" if seed_like else "random",
        select_seed=1,
        # Rows whose text can no longer pass the filter stop at these token counts (generate_phase docstring):
        # the valid samples' distribution is unchanged, and prose answers stop costing max_new_tokens steps.
        screen=(8, 24), screen_rows=0))
    evaluate = ConfigDict(dict(
        models=("base", "teacher", "student"), benchmarks=("math", "gsm8k", "mmlu_math"), math_dataset="math",
        num_examples=0, subset_seed=0, batch_size=16, chat=not seed_like,
        max_new_tokens=ConfigDict(dict(math=1024, gsm8k=512, mmlu_math=10)), mmlu_subjects=SEED_MMLU_SUBJECTS,
        mmlu_mode="logprob"))  # "generate": the seed's generate-and-parse letter scoring (mmlu_math new tokens)
    return ConfigDict(dict(
        name=f"subliminal_{protocol}", protocol=protocol, seed=42, mesh=base.mesh(),
        model=model_section(path, dtype="bfloat16"), student_model=model_section("", dtype="bfloat16"),
        lora=lora_section(rank=128, alpha=256.0, dropout=0.05, targets="all"),
        teacher=teacher, generate=generate, student=student, evaluate=evaluate,
        # The seed's gate before phase 2: the teacher must beat the base on MATH (its plan asks +15 points). "warn"
        # reports a failed gate and generates anyway; "stop" ends the run before generation; "off" skips it.
        gate=ConfigDict(dict(mode="warn", benchmark="math", min_points=0.0)),
        report=ConfigDict(dict(baseline="base", alternative="greater", alpha=0.05, confidence=0.95))))


def smoke(config: ConfigDict, steps: int = 4, prompts: int = 192, target: int = 4, eval_examples: int = 4,
          max_new_tokens: int = 40, gen_batch: int = 32) -> ConfigDict:
    """Shrink a config to a CPU smoke run: a few steps, prompts, sequences and evaluation items; float32."""
    for section in (config.teacher, config.student):
        section.steps = steps
        section.train.update(batch_size=2, grad_accum=1, compute_dtype="")
        section.optimizer.warmup_steps = 1
        section.checkpoint.update(every=2, keep_last=1, async_save=False)
        section.update(eval_every=steps, seq_len=256, buckets=(256,), eval_batch_size=2, max_eval_examples=2)
        section.logging.update(log_every=1, progress_bar=False, tensorboard=False)
    config.teacher.num_examples = 16
    config.student.eval_fraction = 0.0  # a smoke run keeps few sequences; do not hold any out
    config.model.update(dtype="float32", remat_policy="none")
    config.student_model.update(dtype="float32", remat_policy="none")
    config.lora.update(rank=4, alpha=8.0)
    config.generate.update(num_prompts=prompts, target=target, batch_size=gen_batch, max_new_tokens=max_new_tokens)
    config.evaluate.update(num_examples=eval_examples, batch_size=4, math_dataset="math500")
    config.evaluate.max_new_tokens.update(math=max_new_tokens, gsm8k=max_new_tokens)
    return config


def control_config(path: str, protocol: str, small: bool, source: str, control: str) -> ConfigDict:
    """A control run: no teacher phase; sequences from `source` ("file": --config.generate.sequences_from, or
    "base": sampled from the untrained base) transformed by `control`; students evaluated (and the base, so the
    run's own report has its baseline)."""
    config = finish(subliminal_config(path, protocol), small)
    config.name = f"control_{control or source}"
    config.teacher.enabled = False
    config.generate.update(source=source, control=control)
    config.evaluate.models = ("base", "student")
    return config
