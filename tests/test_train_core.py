"""Training core, in process on a toy experiment (an MLP, compiled in well under a second): gradient accumulation,
schedules, decay masks, bf16 compute, NaN stop, foreign-checkpoint refusal, keep-best, frozen weights never
checkpointed, the registry and the config override check."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import base
from latentjax.data.pipeline import make_loader
from latentjax.parallel import rules as rules_lib
from latentjax.train import config_tools, loop, registry
from latentjax.train import state as state_lib
from latentjax.train.checkpoint import CheckpointMismatchError, Checkpointer
from latentjax.train.experiment import Experiment
from latentjax.train.optimizer import default_decay_mask, make_optimizer, make_schedule
from latentjax.train.step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_rows(n: int, dim: int, nan_rows=()):
    rs = np.random.RandomState(0)
    x = rs.randn(n, dim).astype(np.float32)
    y = np.tanh(x @ rs.randn(dim, 1)).astype(np.float32)
    poison = np.zeros((n, 1), np.float32)
    poison[list(nan_rows)] = 1.0
    return [{"x": x[i], "y": y[i], "poison": poison[i]} for i in range(n)]


def toy_experiment(dim=4, hidden=8, batch=8, fingerprint=None, nan_at_step=None, eval_table=None,
                   frozen_size=1000) -> Experiment:
    """y ~ tanh(x W1) W2 * frozen scale. With `nan_at_step` the rows of that step's batch make the loss NaN
    (no shuffle: batch k holds rows [(k-1)*batch, k*batch))."""
    nan_rows = range((nan_at_step - 1) * batch, nan_at_step * batch) if nan_at_step else ()
    rows = toy_rows(256, dim, nan_rows)
    data = iter(make_loader(rows, batch, seed=0, shuffle=nan_at_step is None))

    def init_trainable(rng):
        k1, k2 = jax.random.split(rng)
        part = nn.with_logical_partitioning
        return {"w1": part(nn.initializers.normal(0.5), ("embed", "mlp"))(k1, (dim, hidden)),
                "w2": part(nn.initializers.normal(0.5), ("mlp", None))(k2, (hidden, 1)),
                "b": jnp.zeros((1,))}

    def loss_fn(trainable, frozen, b, rng):
        del rng
        pred = jnp.tanh(b["x"] @ trainable["w1"]) @ trainable["w2"] + trainable["b"]
        pred = pred * frozen["scale"][0]
        err = jnp.mean((pred - b["y"]) ** 2)
        err = jnp.where(jnp.any(b["poison"] > 0), jnp.nan, err)
        return err, {"abs_err": jnp.mean(jnp.abs(pred - b["y"]))}

    eval_fn = None
    if eval_table is not None:
        eval_fn = lambda trainable, step: {"loss": eval_table[step]}  # noqa: E731

    return Experiment(init_trainable=init_trainable, frozen={"scale": jnp.ones((frozen_size,))}, loss_fn=loss_fn,
                      train_data=data, batch_axes={"x": ("batch",), "y": ("batch",)}, eval_fn=eval_fn,
                      fingerprint=fingerprint or {"experiment": "toy", "dim": dim})


def toy_config(steps=12, every=4, log_every=1, keep_last=2, keep_best=0, best_metric="eval/loss"):
    config = base.get_config()
    config.experiment = "toy"
    config.train = base.train(steps=steps, batch_size=8, compute_dtype="")
    config.optimizer = base.optimizer(lr=1e-2, warmup_steps=2)
    config.checkpoint = base.checkpoint(every=every, keep_last=keep_last, keep_best=keep_best,
                                        best_metric=best_metric)
    config.checkpoint.async_save = False
    config.logging.log_every = log_every
    config.logging.progress_bar = False
    config.eval_every = every
    return config


def mesh1():
    return rules_lib.single_device_mesh()


def losses(workdir):
    return {r["step"]: r["train/loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if "train/loss" in r}


# --- the step ---------------------------------------------------------------------------------------------------


def _one_step(grad_accum, optimizer, compute_dtype=None):
    exp = toy_experiment()
    mesh = mesh1()
    shardings = state_lib.state_shardings(exp.init_trainable, optimizer, mesh)
    st = state_lib.init_state(exp.init_trainable, optimizer, 0, shardings, mesh)
    step = make_train_step(exp.loss_fn, optimizer, mesh, rules_lib.DEFAULT_RULES, shardings, exp.batch_axes,
                           grad_accum, compute_dtype=compute_dtype)
    batch = next(exp.train_data)
    st, metrics = step(st, exp.frozen, batch)
    return jax.device_get(st), jax.device_get(metrics)


@pytest.mark.parametrize("grad_accum", [2, 4, 8])
def test_grad_accumulation_equals_big_batch(grad_accum):
    sgd = optax.sgd(0.1)
    big, m_big = _one_step(1, sgd)
    acc, m_acc = _one_step(grad_accum, sgd)
    for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(acc.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m_big["loss"], m_acc["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_big["grad_norm"], m_acc["grad_norm"], rtol=1e-6)
    np.testing.assert_allclose(m_big["abs_err"], m_acc["abs_err"], rtol=1e-6)
    assert not np.allclose(jax.tree.leaves(big.params)[0], jax.tree.leaves(_one_step(1, optax.sgd(0.0))[0].params)[0])


def test_grad_accum_must_divide_batch():
    with pytest.raises(ValueError, match="does not divide into grad_accum=3"):
        _one_step(3, optax.sgd(0.1))


def test_bf16_compute_keeps_float32_masters():
    st, metrics = _one_step(1, optax.adamw(1e-2), compute_dtype=jnp.bfloat16)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(st.params))
    ref, ref_metrics = _one_step(1, optax.adamw(1e-2))
    assert metrics["loss"] != ref_metrics["loss"]  # really computed in bfloat16
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=2e-2)


def test_step_advances_step_and_prng():
    opt = optax.sgd(0.1)
    st0 = state_lib.init_state(toy_experiment().init_trainable, opt, 0,
                               state_lib.state_shardings(toy_experiment().init_trainable, opt, mesh1()), mesh1())
    rng0 = np.asarray(st0.rng)
    st, _ = _one_step(1, opt)
    assert int(st.step) == 1
    assert not np.array_equal(np.asarray(st.rng), rng0)


# --- optimizer --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warmup_and_decay(decay):
    opt = base.optimizer(lr=1.0, warmup_steps=10, decay=decay)
    opt.end_lr_ratio = 0.1
    s = make_schedule(opt, 110)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
    end = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}[decay]
    np.testing.assert_allclose(float(s(110)), end, rtol=1e-5)
    if decay == "cosine":
        np.testing.assert_allclose(float(s(60)), 0.1 + 0.9 * 0.5, rtol=1e-5)
    if decay == "linear":
        np.testing.assert_allclose(float(s(60)), 0.55, rtol=1e-5)


def test_bad_decay_name():
    with pytest.raises(ValueError, match="optimizer.decay must be one of"):
        make_schedule(base.optimizer(decay="cosin"), 10)


def test_weight_decay_mask_spares_vectors():
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones((3,))}
    assert default_decay_mask(params) == {"w": True, "b": False}
    opt_cfg = base.optimizer(lr=0.0, warmup_steps=0, decay="constant")
    opt_cfg.weight_decay = 0.5
    opt_cfg.lr = 1.0
    opt, _ = make_optimizer(opt_cfg, 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((3, 3)))  # decayed: -lr * wd * w
    np.testing.assert_allclose(updates["b"], np.zeros(3))  # not decayed


def test_clipping_is_in_the_chain():
    opt_cfg = base.optimizer(lr=1.0, warmup_steps=0, decay="constant")
    params = {"w": jnp.ones((2, 2))}
    opt_cfg.clip_norm = 1.0
    assert len(make_optimizer(opt_cfg, 10)[0].init(params)) == 2  # clip + adamw
    opt_cfg.clip_norm = 0.0
    assert len(make_optimizer(opt_cfg, 10)[0].init(params)) == 1  # adamw only


# --- the loop: NaN stop, refusal, keep-best, frozen never saved ----------------------------------------------


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    config = toy_config(steps=20, every=5, log_every=4)
    with pytest.raises(loop.NonFiniteLossError, match=r"Loss became nan at step 11 .*last good checkpoint is step 10"):
        loop.train(config, toy_experiment(nan_at_step=11), mesh1(), workdir)
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps == [5, 10]
    logged = losses(workdir)
    assert max(logged) <= 10 and all(np.isfinite(v) for v in logged.values())
    # The kept checkpoint is good: restarting without the poison resumes from step 10 and finishes.
    result = loop.train(config, toy_experiment(), mesh1(), workdir)
    assert result.step == 20 and np.isfinite(result.last_metrics["train/loss"])


def test_foreign_checkpoint_shapes_refused(tmp_path):
    workdir = str(tmp_path / "run")
    loop.train(toy_config(steps=4, every=4), toy_experiment(dim=4), mesh1(), workdir)
    other = toy_experiment(dim=6, fingerprint={"experiment": "toy", "dim": 4})  # same fingerprint, other shapes
    with pytest.raises(CheckpointMismatchError, match=r"different trainable tree \(parameter 'w1' is "
                                                      r"'float32\[4,8\]' in the checkpoint but 'float32\[6,8\]' here"):
        loop.train(toy_config(steps=8, every=4), other, mesh1(), workdir)


def test_foreign_checkpoint_fingerprint_refused(tmp_path):
    workdir = str(tmp_path / "run")
    loop.train(toy_config(steps=4, every=4), toy_experiment(fingerprint={"base": "llama-a"}), mesh1(), workdir)
    with pytest.raises(CheckpointMismatchError, match="different experiment .*'base' is 'llama-a' in the checkpoint "
                                                      "but 'llama-b' here"):
        loop.train(toy_config(steps=8, every=4), toy_experiment(fingerprint={"base": "llama-b"}), mesh1(), workdir)


def test_keep_last_plus_best_and_frozen_not_saved(tmp_path):
    workdir = str(tmp_path / "run")
    table = {5: 1.0, 10: 3.0, 15: 2.0, 20: 4.0, 25: 5.0}
    config = toy_config(steps=25, every=5, keep_last=1, keep_best=1)
    loop.train(config, toy_experiment(eval_table=table, frozen_size=12345), mesh1(), workdir)
    ckdir = os.path.join(workdir, "checkpoints")
    assert sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) == [5, 25]  # best (eval/loss 1.0) + last
    meta = ocp.StandardCheckpointer().metadata(os.path.join(ckdir, "25", "state")).item_metadata
    assert set(meta["params"]) == {"w1", "w2", "b"}
    shapes = [tuple(m.shape) for m in jax.tree.leaves(meta)]
    assert (12345,) not in shapes  # the frozen weights are nowhere in the checkpoint
    evals = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "eval/loss" in r]
    assert [(r["step"], r["eval/loss"]) for r in evals] == sorted(table.items())
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["checkpoint"]["keep_best"] == 1 and saved["train"]["steps"] == 25
    assert os.listdir(os.path.join(workdir, "tb"))  # TensorBoard events written


def test_keep_best_survives_a_restart(tmp_path):
    """The best checkpoint's metric is on disk: a resumed run still keeps it (and knows it is the best)."""
    workdir = str(tmp_path / "run")
    table = {5: 1.0, 10: 3.0, 15: 2.0, 20: 4.0, 25: 5.0}
    loop.train(toy_config(steps=15, every=5, keep_last=1, keep_best=1), toy_experiment(eval_table=table), mesh1(),
               workdir)
    loop.train(toy_config(steps=25, every=5, keep_last=1, keep_best=1), toy_experiment(eval_table=table), mesh1(),
               workdir)
    ckdir = os.path.join(workdir, "checkpoints")
    assert sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) == [5, 25]
    manager = ocp.CheckpointManager(ckdir)
    assert manager.metrics(5) == {"eval/loss": 1.0}
    with Checkpointer(ckdir, {}, best_metric="eval/loss", read_only=True) as reopened:
        assert reopened.best_step() == 5


def test_resume_in_process_is_exact(tmp_path):
    """Stop after 6 of 12 steps (a run configured for 12 but fed 6 batches), resume, compare with one run."""
    full = str(tmp_path / "full")
    loop.train(toy_config(steps=12, every=3), toy_experiment(), mesh1(), full)

    class Six:
        def __init__(self, it):
            self.it, self.n = it, 0

        def __next__(self):
            self.n += 1
            if self.n > 6:
                raise StopIteration
            return next(self.it)

        def get_state(self):
            return self.it.get_state()

        def set_state(self, s):
            self.it.set_state(s)

    part = str(tmp_path / "part")
    exp = toy_experiment()
    exp.train_data = Six(exp.train_data)
    assert loop.train(toy_config(steps=12, every=3), exp, mesh1(), part).step == 6
    result = loop.train(toy_config(steps=12, every=3), toy_experiment(), mesh1(), part)
    assert result.step == 12
    assert losses(part) == losses(full)


def test_command_buffers_option_reaches_the_step_and_changes_no_number(tmp_path, monkeypatch):
    """train.xla_command_buffers (default False) compiles the step with XLA's GPU command buffers off (a compile
    option the CPU ignores); True leaves XLA's default; the losses are the same."""
    from latentjax.train import step as step_lib

    seen = []
    real = step_lib.TrainStep.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("compiler_options"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(step_lib.TrainStep, "__init__", spy)
    on, off = str(tmp_path / "on"), str(tmp_path / "off")
    loop.train(toy_config(steps=6, every=3), toy_experiment(), mesh1(), off)
    config = toy_config(steps=6, every=3)
    config.train.xla_command_buffers = True
    loop.train(config, toy_experiment(), mesh1(), on)
    assert seen == [{"xla_gpu_enable_command_buffer": ""}, None]
    assert losses(off) == losses(on) and len(losses(on)) == 6


# --- registry and configs ---------------------------------------------------------------------------------------


def test_registry_lazy_entries_and_typos():
    assert {"tiny_lm", "bridge", "lora_sft"} <= set(registry.names())
    assert registry._REGISTRY["bridge"] == "latentjax.bridge.experiment:build"
    assert registry._REGISTRY["lora_sft"] == "latentjax.lora.experiment:build"
    from latentjax.train import tiny_lm

    assert registry.get("tiny_lm") is tiny_lm.build
    with pytest.raises(KeyError, match="Did you mean 'tiny_lm'"):
        registry.get("tiny_ln")

    @registry.register("toy_for_test")
    def build(config, mesh):
        return toy_experiment()

    assert registry.get("toy_for_test") is build


def test_override_typo_names_nearest_key():
    config = config_tools.load_config(os.path.join(ROOT, "configs", "tiny_lm.py"))
    config_tools.check_overrides(["--config.optimizer.lr=1", "--config.train.steps", "5"], config)
    with pytest.raises(config_tools.ConfigOverrideError, match="did you mean 'optimizer.lr'"):
        config_tools.check_overrides(["--config.optimizer.lrr=1"], config)
    with pytest.raises(config_tools.ConfigOverrideError, match="did you mean 'checkpoint.keep_best'"):
        config_tools.check_overrides(["--config.checkpoint.keep_bset=2"], config)


def test_cli_override_typo_fails_at_once(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                           "--config=" + os.path.join(ROOT, "configs", "tiny_lm.py"), f"--workdir={tmp_path}/w",
                           "--config.optimzer.lr=0.1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Unknown config key 'optimzer.lr'" in proc.stderr and "did you mean 'optimizer.lr'?" in proc.stderr
    assert not os.path.exists(tmp_path / "w")  # nothing ran


def test_loop_names_missing_config_keys(tmp_path):
    config = toy_config()
    del config.checkpoint["keep_best"]
    with pytest.raises(KeyError, match="lacks checkpoint.keep_best; build it from configs/base.py"):
        loop.train(config, toy_experiment(), mesh1(), str(tmp_path))


def test_base_sections():
    config = base.get_config()
    for section in ("mesh", "model", "optimizer", "train", "data", "checkpoint", "logging"):
        assert section in config
    pair = base.model_pair(sender="/m/a", receiver="/m/b")
    assert pair.sender.path == "/m/a" and pair.receiver.path == "/m/b"


def test_grain_iterator_state_is_saved_per_process(tmp_path):
    workdir = str(tmp_path / "run")
    loop.train(toy_config(steps=4, every=4), toy_experiment(), mesh1(), workdir)
    path = os.path.join(workdir, "checkpoints", "4", "data", "process_0-of-1.json")
    it = toy_experiment().train_data
    for _ in range(4):
        next(it)
    assert json.load(open(path)) == {"json": it.get_state()}  # the position after the 4 batches consumed
