"""The example experiment: next-token training of a small random-init Decoder, all params trainable.

Data are synthetic token sequences with structure to learn (each row is an arithmetic progression modulo the
vocabulary, with a per-row start and stride), through the project's grain pipeline (latentjax.data.pipeline):
deterministic shuffle by seed, per-process sharding, batching, and a checkpointable iterator. It is what the resume tests
run, and the template for writing an experiment builder.
"""
from __future__ import annotations

import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.data.pipeline import make_loader
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder
from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import check_model_fits_mesh
from latentjax.train.experiment import Experiment


def decoder_config(model: ConfigDict) -> DecoderConfig:
    return DecoderConfig(vocab_size=model.vocab_size, hidden_size=model.hidden_size,
                         intermediate_size=model.intermediate_size, num_layers=model.num_layers,
                         num_heads=model.num_heads, num_kv_heads=model.num_kv_heads, head_dim=model.head_dim,
                         dtype=model.dtype, param_dtype="float32", remat_policy=model.remat_policy)


def progression(index: int, seq_len: int, vocab_size: int, seed: int) -> np.ndarray:
    """Row `index`: (a + b * t) mod vocab for t < seq_len, with a, b drawn from (seed, index)."""
    rng = np.random.default_rng([seed, index])
    a, b = rng.integers(vocab_size), rng.integers(1, 8)
    return ((a + b * np.arange(seq_len)) % vocab_size).astype(np.int32)


def synthetic_loader(data: ConfigDict, vocab_size: int, global_batch: int):
    """A grain iterator of {"input_ids": int32[per-process batch, seq_len]} batches, endless
    (latentjax.data.pipeline: seeded shuffle with a new order each epoch, per-process shards)."""
    seq_len, seed = int(data.seq_len), int(data.shuffle_seed)
    transforms = [lambda i: {"input_ids": progression(int(i), seq_len, vocab_size, seed)}]
    read_options = None
    if data.slow_s:  # a slow input pipeline, one row at a time (the preemption tests catch the run mid-way)
        transforms.append(lambda x: (time.sleep(float(data.slow_s)), x)[1])
        read_options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
    loader = make_loader(grain.MapDataset.range(int(data.num_examples)), global_batch, seed, transforms=transforms,
                         worker_count=int(data.worker_count), read_options=read_options)
    return iter(loader)


def next_token_loss(module: Decoder):
    def loss_fn(trainable, frozen, batch, rng):
        del frozen, rng
        ids = batch["input_ids"]
        logits = module.apply({"params": trainable}, ids).logits[:, :-1]
        targets = ids[:, 1:]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        accuracy = (jnp.argmax(logits, -1) == targets).mean()
        return loss, {"accuracy": accuracy}
    return loss_fn


def build(config: ConfigDict, mesh: Mesh) -> Experiment:
    cfg = decoder_config(config.model)
    check_model_fits_mesh(cfg, mesh, rules_lib.rules_from_config(dict(config.mesh.rules)))
    module = Decoder(cfg)
    ids = jnp.zeros((1, 1), jnp.int32)
    loss_fn = next_token_loss(module)
    eval_batch = {"input_ids": np.stack([progression(10**6 + i, int(config.data.seq_len), cfg.vocab_size,
                                                     int(config.data.shuffle_seed)) for i in range(8)])}

    eval_loss = jax.jit(loss_fn)

    def eval_fn(trainable, step):
        del step
        loss, metrics = eval_loss(trainable, None, eval_batch, jax.random.PRNGKey(0))
        return {"loss": loss, **metrics}

    return Experiment(
        init_trainable=lambda rng: module.init(rng, ids)["params"],
        frozen={},
        loss_fn=loss_fn,
        train_data=synthetic_loader(config.data, cfg.vocab_size, int(config.train.batch_size)),
        batch_axes={"input_ids": ("batch", "length")},
        eval_fn=eval_fn,
        fingerprint={"experiment": "tiny_lm", "decoder": {k: getattr(cfg, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
            "head_dim")}},
    )
