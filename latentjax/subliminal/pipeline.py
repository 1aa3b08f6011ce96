"""The subliminal-learning pipeline as resumable phases over one run directory.

    train_teacher  teacher/   data.jsonl (MATH levels 4-5 as prompt/completion), train/ (the loop's workdir with
                              Orbax checkpoints), adapter/ (PEFT)
    (gate)         teacher/gate.json: before generating, base and teacher are evaluated (evaluate/base,
                              evaluate/teacher) and the teacher must beat the base (gate.mode: warn | stop | off)
    generate       generate/  samples.jsonl (every sample with its filter verdict), sequences.jsonl (kept rows,
                              after any control transform), stats.json (pass rate, reasons, tokens/s, lengths)
    train_student  student_seed<S>/  data.jsonl, train/, adapter/  (one per student seed)
    evaluate       evaluate/<model>/{benchmark}.jsonl + .summary.json for base, teacher, student_seed<S>
    report         report/summary.{json,md}, accuracy.png (statistics, `latentjax.subliminal.report`)

Each phase writes `<phase dir>/manifest.json` last: the phase's config, sha256 of its inputs and of its outputs.
A rerun skips a phase whose manifest holds the same config and input hashes; a phase without a manifest resumes
(training from its Orbax checkpoint, generation from the rows written, evaluation benchmark by benchmark); a phase
whose manifest differs is refused (pass `redo` to start it again). Training goes through the one training loop
(`latentjax.train.loop.train`) with the "lora_sft" experiment.

Several JAX processes (a multi-host launch): every process runs every phase (training, generation and evaluation
are collective), the run folder is shared, process 0 alone writes files, and barriers keep every process's view
of the folder the same; generation and evaluation shard their prompts over the processes (`generate_phase`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional, Sequence

import ml_collections

from latentjax.eval import reports

ConfigDict = ml_collections.ConfigDict
PHASES = ("train_teacher", "generate", "train_student", "evaluate", "report")
PLAIN_TEACHER_TEMPLATE = "User: {prompt}\n\nAssistant: Let me solve this step by step.\n\n"
PLAIN_STUDENT_TEMPLATE = "User: {prompt}\n\nAssistant: "
RECORD = "_record"  # key of a phase body's outputs that holds a JSON record for the manifest, not a path


class PhaseChangedError(RuntimeError):
    """A finished phase's manifest records other inputs or config than the current ones."""


def jax_process_index() -> int:
    import jax

    return jax.process_index()


def _barrier(name: str) -> None:
    from latentjax.parallel import distributed

    distributed.barrier(name)


def write_shared_jsonl(path: str, rows: Sequence[dict]) -> str:
    """Process 0 writes `rows`; every process returns once the file is there."""
    if jax_process_index() == 0:
        reports.write_jsonl(path, rows)
    _barrier(f"write:{path}")
    return path


def _say(message: str) -> None:
    if jax_process_index() == 0:
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------ hashing
def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str, weights_by_size: bool = False) -> str:
    """sha256 of a file, or of a folder's (relative name, file hash) list. weights_by_size: *.safetensors/*.bin
    files count by name and size only (a model folder of many GB is fingerprinted without reading it)."""
    if os.path.isfile(path):
        return sha256_file(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if weights_by_size and name.endswith((".safetensors", ".bin", ".pt")):
                digest = f"size:{os.path.getsize(full)}"
            else:
                digest = sha256_file(full)
            h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    return json.loads(x.to_json_best_effort(sort_keys=True)) if isinstance(x, ConfigDict) else x


def config_sha(part: dict) -> str:
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------------ phases
class Run:
    """A run directory and its config; `phase(name, ...)` runs one phase with the manifest rules."""

    def __init__(self, config: ConfigDict, run_dir: str, redo: Sequence[str] = (), mesh: Any = None):
        self.config = config
        self.run_dir = os.path.abspath(run_dir)
        self.redo = set(redo)
        self._mesh = mesh
        os.makedirs(self.run_dir, exist_ok=True)

    @property
    def mesh_setup(self):
        if self._mesh is None:
            from latentjax.parallel.mesh import mesh_from_config

            self._mesh = mesh_from_config(self.config.mesh)
        return self._mesh

    def dir(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def manifest_path(self, phase_dir: str) -> str:
        return self.dir(phase_dir, "manifest.json")

    def finished(self, phase_dir: str) -> bool:
        return os.path.exists(self.manifest_path(phase_dir))

    def phase(self, phase_dir: str, config_part: dict, inputs: dict, body: Callable[[str], dict]) -> str:
        """Run `body(abs phase dir) -> {name: output path}` unless finished with the same config and inputs.
        Returns "skipped" or "done"."""
        path = self.manifest_path(phase_dir)
        hashes = {k: sha256_path(v, weights_by_size=k.endswith("model")) for k, v in sorted(inputs.items())}
        part = {k: _jsonable(v) for k, v in config_part.items()}
        started = self.dir(phase_dir, "started.json")
        key = {"config_sha256": config_sha(part), "inputs": hashes}
        writer = jax_process_index() == 0
        _barrier(f"phase:{phase_dir}:start")
        hit = [r for r in self.redo if phase_dir == r or phase_dir.startswith(r.rstrip("/") + "/")]
        if hit and os.path.isdir(self.dir(phase_dir)):
            _say(f"[{phase_dir}] redo: removing {self.dir(phase_dir)}")
            if writer:
                shutil.rmtree(self.dir(phase_dir))
            _barrier(f"phase:{phase_dir}:redo")
        if phase_dir in self.redo:
            self.redo.discard(phase_dir)
        for what, file in (("finished", path), ("interrupted", started)):
            if os.path.exists(file):
                old = reports.read_json(file)
                if {"config_sha256": old.get("config_sha256"), "inputs": old.get("inputs")} != key:
                    raise PhaseChangedError(
                        f"Phase {phase_dir!r} ({what}) in {self.run_dir} was run with another config or other "
                        f"inputs; rerun with --redo={phase_dir} to start it again (or use another run_dir).")
                if what == "finished":
                    _say(f"[{phase_dir}] finished earlier (manifest {path}); skipped.")
                    return "skipped"
        os.makedirs(self.dir(phase_dir), exist_ok=True)
        if os.path.exists(started):
            _say(f"[{phase_dir}] resuming an interrupted run.")
        _barrier(f"phase:{phase_dir}:checked")
        if writer:
            reports.write_json(started, {**key, "config": part})
        t0 = time.time()
        outputs = body(self.dir(phase_dir))
        if outputs is None:  # interrupted (e.g. preempted): no manifest, the next run resumes
            _say(f"[{phase_dir}] stopped before the end; rerun to resume.")
            return "interrupted"
        outputs = dict(outputs)
        record = outputs.pop(RECORD, None)  # facts the phase wants in its manifest (e.g. the exported step)
        _barrier(f"phase:{phase_dir}:body")
        if not writer:
            _barrier(f"phase:{phase_dir}:manifest")
            return "done"
        manifest = {"phase": phase_dir, **key, "config": part, "input_paths": inputs,
                    **({"record": record} if record is not None else {}),
                    "outputs": {k: {"path": os.path.relpath(v, self.run_dir),
                                    "sha256": sha256_path(v)} for k, v in outputs.items()},
                    "seconds": time.time() - t0, "finished_unix": time.time()}
        reports.write_json(path, manifest)
        _say(f"[{phase_dir}] done in {time.time() - t0:.1f}s.")
        _barrier(f"phase:{phase_dir}:manifest")
        return "done"


# ------------------------------------------------------------------------------------------------------ training
def sft_config(config: ConfigDict, section: ConfigDict, model: ConfigDict, data_path: str, seed: int,
               chat: bool, prompt_template: str, completion_only: bool) -> ConfigDict:
    """The "lora_sft" config of one training phase (shared sections from `config`, the rest from `section`)."""
    from latentjax.lora.experiment import data_section

    data = data_section(path=data_path, seq_len=int(section.seq_len))
    data.update(chat=bool(chat), prompt_template=prompt_template, completion_only=bool(completion_only),
                eval_fraction=float(section.eval_fraction), eval_batch_size=int(section.eval_batch_size),
                max_eval_examples=int(section.max_eval_examples), buckets=tuple(section.buckets),
                shuffle_seed=int(seed))
    return ConfigDict(dict(
        experiment="lora_sft", seed=int(seed), eval_every=int(section.eval_every), mesh=config.mesh,
        model=model, lora=config.lora, data=data, train=ConfigDict(section.train.to_dict()),
        optimizer=section.optimizer, checkpoint=ConfigDict(section.checkpoint.to_dict()), logging=section.logging))


def best_kept_state(checkpoint_dir: str, fingerprint: dict, last_state: Any, last_step: int,
                    metric: str = "eval/loss", mode: str = "min") -> tuple[Any, int, dict]:
    """(state, step, {kept step: finite `metric`}) of the kept checkpoint with the best `metric` stored by Orbax
    in `checkpoint_dir` (`last_state`/`last_step` when no kept step has one). Another step is restored through
    Checkpointer.restore into `last_state`'s shardings; a checkpoint written for another experiment or trainable
    tree is refused with CheckpointMismatchError."""
    from latentjax.train.checkpoint import Checkpointer, abstract_like, best_of, experiment_meta

    meta = experiment_meta(fingerprint, last_state.params)
    with Checkpointer(checkpoint_dir, meta, best_metric=metric, best_mode=mode, read_only=True) as ckpt:
        values = {s: v for s, v in ckpt.stored_metrics().items() if math.isfinite(v)}
        best = best_of(values, mode)
        if best is None:
            return last_state, int(last_step), values
        if best == last_step:  # the loop's final state is that checkpoint; still refuse a foreign directory
            ckpt.check_compatible(best)
            return last_state, int(best), values
        state = ckpt.restore(best, abstract_like(last_state))
    return state, int(best), values


def train_adapter(run: Run, sft: ConfigDict, section: ConfigDict, phase_dir: str) -> Optional[dict]:
    """Train with the one loop in `phase_dir/train`, export an adapter to `phase_dir/adapter` (PEFT).

    section.export = "last" exports the final step; "best" exports the checkpoint with the lowest held-out loss
    (`eval/loss`, evaluated every `eval_every` steps and at the end; every checkpoint is then written at an
    evaluation step and the loop's keep-best policy keeps the best one). The exported step is recorded in
    `train_result.json` and in the phase manifest (`record.exported_step`)."""
    from latentjax.lora.experiment import lora_config_from
    from latentjax.lora.peft import export_peft
    from latentjax.models.config import load_hf_config
    from latentjax.train import loop, registry

    export = section.get("export", "last")
    if export not in ("last", "best"):
        raise ValueError(f"export must be 'last' or 'best', got {export!r}.")
    mesh = run.mesh_setup.mesh
    experiment = registry.get("lora_sft")(sft, mesh)
    steps = int(section.steps) or max(1, math.ceil(float(section.epochs) * experiment.train_data.steps_per_epoch))
    sft.train.steps = steps
    if export == "best" and experiment.eval_fn is None:
        _say(f"[{os.path.basename(phase_dir)}] no validation rows (eval_fraction 0): exporting the last step.")
        export = "last"
    if export == "best":
        sft.checkpoint.update(every=int(sft.eval_every), keep_best=max(1, int(sft.checkpoint.keep_best)),
                              best_metric="eval/loss", best_mode="min")
    _say(f"[{os.path.basename(phase_dir)}] {len(experiment.train_data.examples)} training examples, "
         f"{experiment.train_data.steps_per_epoch} steps/epoch, {steps} steps, exporting the {export} step.")
    result = loop.train(sft, experiment, mesh, os.path.join(phase_dir, "train"))
    if result.preempted:
        return None
    state, chosen, losses = result.state, int(result.step), {}
    if export == "best":
        _barrier(f"trained:{phase_dir}")  # every process's manager has finished writing
        state, chosen, losses = best_kept_state(os.path.join(phase_dir, "train", "checkpoints"),
                                                experiment.fingerprint, result.state, chosen)
    adapter = os.path.join(phase_dir, "adapter")
    export_peft(adapter, state.params, lora_config_from(sft), load_hf_config(sft.model.path),
                base_model_name_or_path=sft.model.path)
    record = {"export": export, "exported_step": chosen, "last_step": int(result.step),
              "eval_loss_of_kept_checkpoints": {str(k): v for k, v in sorted(losses.items())},
              "exported_eval_loss": losses.get(chosen)}
    if jax_process_index() == 0:
        reports.write_json(os.path.join(phase_dir, "train_result.json"),
                           {"steps": result.step, "last_metrics": result.last_metrics, **record})
    _say(f"[{os.path.basename(phase_dir)}] exported step {chosen} of {result.step}"
         + (f" (eval/loss {losses[chosen]:.4f})" if chosen in losses else "") + f" to {adapter}.")
    return {"adapter": adapter, "data": sft.data.path, RECORD: record}


def teacher_rows(tc: ConfigDict, seed: int) -> list[dict]:
    """MATH training problems of the configured levels as {prompt, completion, level, type} (a seeded subset of
    `num_examples` when set)."""
    import numpy as np

    from latentjax.data.sources import load_split

    levels = {f"Level {int(lv)}" for lv in tc.levels}
    rows = [r for r in load_split(tc.dataset, tc.split) if not levels or r.get("level") in levels]
    if tc.num_examples and tc.num_examples < len(rows):
        keep = sorted(np.random.default_rng(seed).permutation(len(rows))[:int(tc.num_examples)])
        rows = [rows[i] for i in keep]
    return [{"prompt": r["problem"], "completion": r["solution"], "level": r.get("level"), "type": r.get("type")}
            for r in rows]


def phase_train_teacher(run: Run) -> str:
    c, tc = run.config, run.config.teacher

    def body(d):
        rows = teacher_rows(tc, int(c.seed))
        _say(f"[teacher] {len(rows)} MATH problems of levels {tuple(tc.levels)}.")
        data_path = write_shared_jsonl(os.path.join(d, "data.jsonl"), rows)
        plain = tc.format == "plain"
        sft = sft_config(c, tc, c.model, data_path, int(c.seed), chat=not plain,
                         prompt_template=PLAIN_TEACHER_TEMPLATE if plain else "{prompt}",
                         completion_only=bool(tc.completion_only))
        return train_adapter(run, sft, tc, d)

    return run.phase("teacher", {"seed": c.seed, "model": c.model, "lora": c.lora, "teacher": tc},
                     {"base_model": c.model.path}, body)


def student_model(config: ConfigDict) -> ConfigDict:
    return config.student_model if config.student_model.path else config.model


def phase_train_student(run: Run) -> list[str]:
    c, sc = run.config, run.config.student
    sequences = run.dir("generate", "sequences.jsonl")
    model = student_model(c)
    statuses = []
    for seed in sc.seeds:
        def body(d, seed=int(seed)):
            rows = [{"prompt": r["prompt"], "completion": r["canonical"] if sc.completion == "canonical"
                     else r["completion"]} for r in reports.read_jsonl(sequences)]
            if len(rows) < int(sc.train.batch_size):
                raise ValueError(f"Only {len(rows)} sequences in {sequences} for a batch of {sc.train.batch_size}; "
                                 "generate more (generate.num_prompts) or lower student.train.batch_size.")
            data_path = write_shared_jsonl(os.path.join(d, "data.jsonl"), rows)
            plain = sc.format == "plain"
            sft = sft_config(c, sc, model, data_path, seed, chat=not plain,
                             prompt_template=PLAIN_STUDENT_TEMPLATE if plain else "{prompt}",
                             completion_only=bool(sc.completion_only))
            return train_adapter(run, sft, sc, d)

        statuses.append(run.phase(f"student_seed{int(seed)}",
                                  {"seed": int(seed), "model": model, "lora": c.lora, "student": sc},
                                  {"sequences": sequences, "base_model": model.path}, body))
    return statuses


# ------------------------------------------------------------------------------------------------------ models
def load_model(run: Run, model_section: ConfigDict, adapter: Optional[str] = None, cache: Optional[dict] = None):
    """The base of `model_section` on the run's mesh, with the PEFT adapter at `adapter` merged in (a merged
    copy; the base stays as loaded). `cache` ({}) keeps loaded bases for reuse within a phase."""
    from latentjax.lora.adapter import merged_model
    from latentjax.lora.peft import import_peft, read_peft_config
    from latentjax.models.model import from_pretrained

    setup = run.mesh_setup
    key = (model_section.path, model_section.dtype, model_section.get("param_dtype") or model_section.dtype)
    model = cache.get(key) if cache is not None else None
    if model is None:
        model = from_pretrained(model_section.path, dtype=model_section.dtype,
                                param_dtype=model_section.get("param_dtype") or model_section.dtype, mesh=setup.mesh,
                                rules=setup.rules, attention_impl=model_section.attention_impl)
        if cache is not None:
            cache.clear()  # one base at a time
            cache[key] = model
    if adapter:
        lora = import_peft(adapter, model.config, setup.mesh, setup.rules)
        model = merged_model(model, lora, read_peft_config(adapter))
    return model


# ------------------------------------------------------------------------------------------------------ generate
def phase_generate(run: Run) -> str:
    from latentjax.subliminal import controls, generate_phase as gp, numbers

    c, gc = run.config, run.config.generate
    inputs = {}
    if gc.source == "teacher":
        inputs = {"teacher_adapter": run.dir("teacher", "adapter"), "base_model": c.model.path}
    elif gc.source == "base":
        inputs = {"base_model": c.model.path}
    elif gc.source == "file":
        if not gc.sequences_from:
            raise ValueError("generate.source='file' needs generate.sequences_from (a sequences.jsonl).")
        inputs = {"sequences_from": gc.sequences_from}
    else:
        raise ValueError(f"Unknown generate.source {gc.source!r}; use 'teacher', 'base' or 'file'.")

    def body(d):
        if gc.source == "file":
            kept = reports.read_jsonl(gc.sequences_from)
            stats = {"source_file": gc.sequences_from}
        else:
            filt = (numbers.make_filter("paper", strip_outer_whitespace=bool(gc.strip_outer_whitespace),
                                        banned=tuple(gc.banned)) if gc.filter == "paper"
                    else numbers.make_filter(gc.filter))
            prompts = numbers.build_prompts(gc.design, int(gc.num_prompts), int(gc.prompt_seed))
            model = load_model(run, c.model, run.dir("teacher", "adapter") if gc.source == "teacher" else None)
            stats = gp.generate_samples(
                gp.Sampler.of(model), prompts, os.path.join(d, "samples.jsonl"), filter_fn=filt,
                target=int(gc.target), batch_size=int(gc.batch_size), max_new_tokens=int(gc.max_new_tokens),
                temperature=float(gc.temperature), top_p=float(gc.top_p), seed=int(gc.sample_seed),
                chat=bool(gc.chat), stop_at_target=gc.select == "first", progress=True,
                screen=tuple(int(b) for b in gc.get("screen", ())), screen_rows=int(gc.get("screen_rows", 0)))
            del model
            samples = reports.read_jsonl(os.path.join(d, "samples.jsonl"))
            kept = gp.select_sequences(samples, int(gc.target), gc.select, int(gc.select_seed))
        kept = controls.apply_control(gc.control, kept, int(gc.control_seed))
        if not kept:
            raise RuntimeError("No valid sequence was generated; the student has nothing to train on.")
        stats.update(kept=len(kept), control=gc.control, numbers_per_row=gp.length_histogram(kept))
        if len(kept) < int(gc.target):
            _say(f"[generate] only {len(kept)} valid sequences of the {gc.target} wanted.")
        if jax_process_index() == 0:
            reports.write_json(os.path.join(d, "stats.json"), stats)
        return {"sequences": write_shared_jsonl(os.path.join(d, "sequences.jsonl"), kept),
                "stats": os.path.join(d, "stats.json")}

    return run.phase("generate", {"model": c.model if gc.source != "file" else None, "generate": gc}, inputs, body)


# ------------------------------------------------------------------------------------------------------ evaluate
def eval_models(run: Run) -> dict:
    """{name: (model section, adapter or None)} of the models to evaluate (present adapters only)."""
    c = run.config
    out = {}
    for name in c.evaluate.models:
        if name == "base":
            out["base"] = (c.model, None)
        elif name == "student_base":  # the student's own base (another family in that control)
            out["student_base"] = (student_model(c), None)
        elif name == "teacher" and os.path.isdir(run.dir("teacher", "adapter")):
            out["teacher"] = (c.model, run.dir("teacher", "adapter"))
        elif name == "student":
            for seed in c.student.seeds:
                adapter = run.dir(f"student_seed{int(seed)}", "adapter")
                if os.path.isdir(adapter):
                    out[f"student_seed{int(seed)}"] = (student_model(c), adapter)
    return out


def benchmark_items(ec: ConfigDict) -> dict:
    from latentjax.subliminal.evaluate_phase import load_items

    out = {}
    for bench in ec.benchmarks:
        dataset = ec.math_dataset if bench == "math" else ""
        out[bench] = {"items": load_items(bench, dataset, "test", int(ec.num_examples), int(ec.subset_seed),
                                          tuple(ec.mmlu_subjects)),
                      "max_new_tokens": int(ec.max_new_tokens.get(bench, 0) or 1)}
    return out


def phase_evaluate(run: Run, models: Optional[dict] = None) -> list[str]:
    """Evaluate `models` ({name: (model section, adapter)}, default `eval_models(run)`), each its own phase."""
    from latentjax.subliminal.evaluate_phase import evaluate_model
    from latentjax.subliminal.generate_phase import Sampler

    ec = run.config.evaluate
    statuses = []
    items = None
    bases: dict = {}
    for name, (model_section, adapter) in (eval_models(run) if models is None else models).items():
        def body(d, model_section=model_section, adapter=adapter):
            nonlocal items
            items = items or benchmark_items(ec)
            model = load_model(run, model_section, adapter, bases)
            evaluate_model(Sampler.of(model), d, items, chat=bool(ec.chat), batch_size=int(ec.batch_size),
                           progress=True, mmlu_mode=ec.get("mmlu_mode", "logprob"))
            return {b: os.path.join(d, f"{b}.jsonl") for b in ec.benchmarks}

        inputs = {"base_model": model_section.path, **({"adapter": adapter} if adapter else {})}
        statuses.append(run.phase(os.path.join("evaluate", name), {"model": model_section, "evaluate": ec},
                                  inputs, body))
    return statuses


class TeacherGateError(RuntimeError):
    """The teacher does not beat its base by the gate's margin (raised before generation when gate.mode=stop)."""


def check_teacher_gate(run: Run) -> Optional[dict]:
    """The seed's gate before phase 2: the teacher must beat the base on `gate.benchmark` by more than
    `gate.min_points`. Evaluates both (the evaluate phase's own folders, so the later evaluate phase skips them),
    writes teacher/gate.json, and warns (gate.mode=warn) or raises TeacherGateError (gate.mode=stop). Its own
    config section: changing the gate never invalidates a trained teacher."""
    c = run.config
    gc = c.get("gate") or ml_collections.ConfigDict(dict(mode="off"))
    mode = gc.get("mode", "off")
    if mode == "off" or not c.teacher.enabled or c.generate.source != "teacher":
        return None
    if mode not in ("warn", "stop"):
        raise ValueError(f"gate.mode must be 'off', 'warn' or 'stop', got {mode!r}.")
    bench = gc.get("benchmark", "math")
    if bench not in c.evaluate.benchmarks:
        raise ValueError(f"gate.benchmark {bench!r} is not among evaluate.benchmarks "
                         f"{tuple(c.evaluate.benchmarks)}; add it or set --config.gate.mode=off.")
    phase_evaluate(run, {"base": (c.model, None), "teacher": (c.model, run.dir("teacher", "adapter"))})
    _barrier("gate:evaluated")  # process 0 wrote the summaries
    acc = {name: 100.0 * reports.read_json(run.dir("evaluate", name, f"{bench}.summary.json"))["accuracy"]
           for name in ("base", "teacher")}
    gain, need = acc["teacher"] - acc["base"], float(gc.get("min_points", 0.0))
    gate = {"benchmark": bench, "base_pct": acc["base"], "teacher_pct": acc["teacher"], "gain_points": gain,
            "min_points": need, "passed": gain > need, "mode": mode}
    if jax_process_index() == 0:
        reports.write_json(run.dir("teacher", "gate.json"), gate)
    if not gate["passed"]:
        message = (f"Teacher gate: the teacher scores {acc['teacher']:.1f}% on {bench} against the base's "
                   f"{acc['base']:.1f}% ({gain:+.1f} points; the gate asks for more than {need:+.1f}), so the "
                   f"students have no skill to inherit; train a stronger teacher (more steps or examples, another "
                   f"learning rate) or set --config.gate.mode=warn to generate anyway.")
        if mode == "stop":
            raise TeacherGateError(message)
        _say("[gate] WARNING " + message)
    return gate


def phase_report(run: Run, compare_runs: Optional[dict] = None) -> dict:
    """Statistics over this run's evaluated models, plus models of other runs as `{label: run_dir}` (controls:
    their students appear as `<label>_seed<S>`)."""
    from latentjax.subliminal.report import build_report

    c = run.config
    models = {}
    for name in eval_models(run):
        folder = run.dir("evaluate", name)
        if os.path.exists(os.path.join(folder, "manifest.json")):
            models[name] = folder
    for label, other in (compare_runs or {}).items():
        ev = os.path.join(other, "evaluate")
        for name in sorted(os.listdir(ev)) if os.path.isdir(ev) else []:
            if name.startswith("student_seed"):
                models[f"{label}_{name[len('student_'):]}"] = os.path.join(ev, name)
    if jax_process_index() == 0:
        summary = build_report(models, tuple(c.evaluate.benchmarks), run.dir("report"),
                               baseline=c.report.get("baseline", "base"), alternative=c.report.alternative,
                               alpha=float(c.report.alpha), confidence=float(c.report.confidence))
    _barrier("report:written")
    return summary if jax_process_index() == 0 else reports.read_json(run.dir("report", "summary.json"))


def run_pipeline(config: ConfigDict, run_dir: str, phase: str = "all", redo: Sequence[str] = (),
                 compare_runs: Optional[dict] = None, mesh: Any = None) -> dict:
    """Run `phase` (one of PHASES or "all") in `run_dir`; returns {phase: status}. With "all", a training phase
    stopped early (SIGTERM) ends the run so the next call resumes it."""
    if phase != "all" and phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; use one of {', '.join(PHASES)} or 'all'.")
    run = Run(config, run_dir, redo, mesh)
    if jax_process_index() == 0:
        reports.write_json(run.dir("config.json"), _jsonable(config))
    wanted = PHASES if phase == "all" else (phase,)
    status: dict = {}
    for name in wanted:
        if name == "train_teacher":
            if not config.teacher.enabled:
                status[name] = "disabled"
                continue
            status[name] = phase_train_teacher(run)
        elif name == "generate":
            check_teacher_gate(run)
            status[name] = phase_generate(run)
        elif name == "train_student":
            status[name] = phase_train_student(run)
        elif name == "evaluate":
            status[name] = phase_evaluate(run)
        elif name == "report":
            summary = phase_report(run, compare_runs)
            status[name] = f"{len(summary['rows'])} rows"
        flat = status[name] if isinstance(status[name], list) else [status[name]]
        if "interrupted" in flat:
            break
    return status
