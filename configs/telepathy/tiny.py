"""The bridge loop end to end on CPU in seconds: two tiny random HF checkpoints (a Llama sender of width 72 and a
Mistral receiver of width 48, byte-level tokenizers) written once under `root`, SST-2 from shared/data.

    python launch/train.py --config=configs/telepathy/tiny.py --workdir=/tmp/bridge_tiny
    python launch/train.py --config=configs/telepathy/tiny.py:root=/tmp/tiny_pair ...
"""
import os
import tempfile

from configs.telepathy import common


def get_config(arg=None):
    variant = common.parse_arg(arg)
    root = variant.pop("root", os.path.join(tempfile.gettempdir(), "latentjax_tiny_bridge_pair"))
    from latentjax.bridge.tiny import ensure_tiny_pair

    sender, receiver = ensure_tiny_pair(root)
    config = common.bridge_config("sst2", steps=30, batch_size=8, grad_accum=1, lr=3e-3, num_latents=4, layer=-2,
                                  output_scale="embedding_median_rms", eval_every=15, num_samples=8,
                                  final_num_samples=16, arg=",".join(f"{k}={v}" for k, v in variant.items()))
    config.model = common.base.model_pair(sender, receiver, dtype="float32")
    config.model.sender.layer = int(variant.get("layer", -2))
    config.model.remat_policy = "none"
    config.model.attention_impl = "xla"
    config.bridge.width = 32
    config.bridge.num_heads = 4
    config.task.train_limit = 512
    config.eval.batch_size = 8
    config.checkpoint = common.base.checkpoint(every=15, keep_last=2, keep_best=1,
                                               best_metric="eval/label_scoring_accuracy", best_mode="max")
    config.checkpoint.async_save = False
    config.logging = common.base.logging(log_every=5)
    config.logging.progress_bar = False
    return config
