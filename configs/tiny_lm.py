"""A small random-init decoder learning synthetic token sequences on CPU in seconds (the resume tests' run).

    python launch/train.py --config=configs/tiny_lm.py --workdir=/tmp/tiny --config.train.steps=200
"""
from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    config.experiment = "tiny_lm"
    config.model = base.decoder(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                                num_kv_heads=2, head_dim=8)
    config.train = base.train(steps=40, batch_size=8, compute_dtype="")
    config.optimizer = base.optimizer(lr=3e-3, warmup_steps=5, decay="cosine")
    config.data.seq_len = 16
    config.data.num_examples = 1024  # synthetic rows (an epoch)
    config.data.slow_s = 0.0  # seconds of sleep per row: a slow input pipeline (the preemption tests use it)
    config.checkpoint = base.checkpoint(every=10, keep_last=2, keep_best=1, best_metric="eval/loss")
    config.eval_every = 10
    config.logging.log_every = 1
    return config
