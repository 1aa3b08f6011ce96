"""The translator loop end to end on CPU in seconds: the tiny random pair of latentjax.bridge.tiny (Llama source
of width 72 -> narrower Mistral target of width 48, byte-level tokenizers), GSM8K rows from shared/data.

    python launch/train.py --config=configs/translator/tiny.py --workdir=/tmp/translator_tiny
    python launch/train.py --config=configs/translator/tiny.py:root=/tmp/pair,kind=cross ...
"""
import os
import tempfile

from configs import base
from configs.translator import common


def get_config(arg=None):
    variant = common.parse_arg(arg)
    root = variant.pop("root", os.path.join(tempfile.gettempdir(), "latentjax_tiny_bridge_pair"))
    from latentjax.bridge.tiny import ensure_tiny_pair

    sender, receiver = ensure_tiny_pair(root)
    variant.setdefault("steps", "12")
    variant.setdefault("batch", "4")
    variant.setdefault("tokens", "4")
    variant.setdefault("lr", "3e-3")
    config = common.translator_config("llama_to_mistral", arg=",".join(f"{k}={v}" for k, v in variant.items()))
    config.model = base.model_pair(sender, receiver, dtype="float32")
    config.model.sender.layer = -1
    config.model.remat_policy = "none"
    config.model.attention_impl = "xla"
    config.train.compute_dtype = ""
    config.optimizer.warmup_steps = 0
    config.optimizer.decay = "constant"
    config.translator.cross.update(width=32, depth=1, num_heads=4)
    config.translator.dit.update(width=32, depth=2, num_heads=4, cond_width=32, time_dim=16)
    config.translator.train_context = variant.get("context", "mode")
    config.loss.kl_warmup_steps = 2
    config.loss.prompt_alignment = 0.1  # the tiny embeddings are small: make the term visible
    config.data.train_limit = 64
    config.data.sender_max_tokens = 128
    config.data.receiver_max_tokens = 384
    config.eval.update(num_samples=4, final_num_samples=4, batch_size=4, max_new_tokens=8, few_shot=0,
                       sender_max_tokens=256)
    config.eval_every = 12
    config.checkpoint = base.checkpoint(every=12, keep_last=1, keep_best=0, best_metric="eval/accuracy",
                                        best_mode="max")
    config.checkpoint.async_save = False
    config.logging = base.logging(log_every=1)
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return config
