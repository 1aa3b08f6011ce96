"""Shared config sections. An experiment file starts from `base.get_config()` and replaces only what differs:

    from configs import base

    def get_config(arg=None):
        config = base.get_config()
        config.experiment = "bridge"            # registry name of the builder (latentjax.train.registry)
        config.model = base.model_pair(sender="/models/llama", receiver="/models/mistral")
        config.optimizer.lr = 1e-4
        return config

Every key that exists here can be overridden from the command line (`--config.optimizer.lr=3e-4`); a key that does
not exist is refused with the nearest real key named.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from latentjax.train.step import TRAIN_COMMAND_BUFFERS


def mesh(shape=(-1, 1, 1)) -> ConfigDict:
    """Device mesh (data, fsdp, tensor); -1 = the rest. `rules` overrides entries of
    latentjax.parallel.rules.DEFAULT_RULES: {logical axis: mesh axis | [mesh axes] | None}."""
    return ConfigDict(dict(shape=tuple(shape), rules=ConfigDict()))


def optimizer(lr=1e-4, warmup_steps=100, decay="cosine") -> ConfigDict:
    """AdamW. decay: cosine | linear | constant, from lr down to lr * end_lr_ratio at train.steps.
    clip_norm <= 0 disables global-norm clipping."""
    return ConfigDict(dict(lr=float(lr), warmup_steps=int(warmup_steps), decay=decay, end_lr_ratio=0.1,
                           b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=1.0))


def train(steps=1000, batch_size=32, grad_accum=1, compute_dtype="bfloat16",
          xla_command_buffers=TRAIN_COMMAND_BUFFERS) -> ConfigDict:
    """batch_size is global (all processes); each step scans grad_accum microbatches of batch_size/grad_accum.
    compute_dtype: the dtype trainable params are cast to for forward/backward ("" = no cast); masters are
    float32. xla_command_buffers: compile the step with XLA's GPU command buffers (CUDA graphs); off by default:
    steadier and faster for per-layer models, 1-2% slower for scanned ones (`latentjax.train.step`)."""
    return ConfigDict(dict(steps=int(steps), batch_size=int(batch_size), grad_accum=int(grad_accum),
                           compute_dtype=compute_dtype, xla_command_buffers=bool(xla_command_buffers)))


def data(name="", path="", seq_len=512) -> ConfigDict:
    """Input pipeline. shuffle_seed fixes the order; worker_count changes it (grain), so it is recorded here."""
    return ConfigDict(dict(name=name, path=path, split="train", eval_split="", seq_len=int(seq_len),
                           shuffle_seed=0, worker_count=0))


def checkpoint(every=500, keep_last=3, keep_best=1, best_metric="eval/loss", best_mode="min") -> ConfigDict:
    """Orbax checkpoints in workdir/checkpoints: every N steps, the last keep_last plus the keep_best best by
    best_metric (a key of the logged metrics; checkpoints saved without it only count as "last")."""
    return ConfigDict(dict(every=int(every), keep_last=int(keep_last), keep_best=int(keep_best),
                           best_metric=best_metric, best_mode=best_mode, async_save=True,
                           preemption_sync_every=10))


def logging(log_every=10) -> ConfigDict:
    """metrics.jsonl lines and TensorBoard points every log_every steps (means over the window)."""
    return ConfigDict(dict(log_every=int(log_every), progress_bar=True, tensorboard=True))


def model_pair(sender="", receiver="", dtype="bfloat16") -> ConfigDict:
    """Two frozen decoders (HF folders) talking through a trainable module (bridge, translator)."""
    return ConfigDict(dict(sender=ConfigDict(dict(path=sender, dtype=dtype)),
                           receiver=ConfigDict(dict(path=receiver, dtype=dtype)),
                           remat_policy="minimal", attention_impl="auto",
                           # frozen models: one q/k/v and one gate/up matmul per layer (models.model.fuse_projections)
                           fused_projections=True,
                           # and the layers' norm scales folded into those matmuls (models.model.fold_norm_scales)
                           folded_norms=True))


def decoder(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=16, dtype="float32") -> ConfigDict:
    """A random-init decoder's dimensions (tiny_lm and tests)."""
    return ConfigDict(dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                           num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
                           head_dim=head_dim, dtype=dtype, remat_policy="none"))


def get_config() -> ConfigDict:
    """All sections with defaults; `experiment` and `model` are the experiment file's to fill."""
    return ConfigDict(dict(
        experiment="",
        seed=0,
        eval_every=0,  # steps between eval_fn calls (0 = never)
        eval_at_start=False,  # also evaluate the untrained state (step 0) of a fresh run
        mesh=mesh(),
        model=ConfigDict(),
        optimizer=optimizer(),
        train=train(),
        data=data(),
        checkpoint=checkpoint(),
        logging=logging(),
    ))
