"""The CPU learning proof: the tiny random pair of `tiny.py` on the synthetic sender-only task (latentjax/tasks/
synthetic.py: the class is a marker word only the sender reads; answers are single letters). Label scoring only
(a random receiver's greedy output is rarely a letter). 600 steps of ~10 ms plus compilation on a 2-core CPU.

    python launch/train.py --config=configs/telepathy/synthetic.py --workdir=/tmp/bridge_synthetic
    python launch/train.py --config=configs/telepathy/synthetic.py:root=/tmp/tiny_pair,steps=1000,seed=1 ...
"""
from ml_collections import ConfigDict

from configs.telepathy import common, tiny


def get_config(arg=None):
    variant = common.parse_arg(arg)
    config = tiny.get_config(arg)
    config.task.name = "synthetic"
    config.task.train_limit = 0
    config.task.options = ConfigDict(dict(eval_size=128))  # any SyntheticTask field may be added here
    config.train.steps = int(variant.get("steps", 600))
    config.train.batch_size = int(variant.get("batch", 16))
    config.optimizer.lr = float(variant.get("lr", 3e-3))
    config.eval_every = config.train.steps
    config.eval.generate = False
    config.eval.num_samples = 0  # 0 = the whole generated eval split (task.options.eval_size)
    config.eval.final_num_samples = 0
    config.eval.batch_size = 32
    config.checkpoint.every = config.train.steps
    config.logging.log_every = 25
    return config
