"""Prompt-tuning baseline (experiment "prompt_tuning", latentjax/bridge/prompt_tuning.py): K learned vectors on the
frozen receiver, no sender, on top of any telepathy config (the task, receiver, training and evaluation settings
of that file; K = its bridge.num_latents, the seed's K=8 for SST-2 / AG News).

    python launch/train.py --config=configs/telepathy/prompt_tuning.py:base=sst2 --workdir=runs/pt_sst2 \
        --config.model.receiver.path=/models/Mistral-7B-Instruct-v0.3 --config.eval.output_dir=runs/pt_sst2/eval
    python launch/train.py --config=configs/telepathy/prompt_tuning.py:base=sst2,layout=text ...
    python launch/train.py --config=configs/telepathy/prompt_tuning.py:base=synthetic,root=/tmp/pair ...  # CPU

Variant keys: base=<a configs/telepathy file without .py> (sst2, ag_news, banking77, passkey, smollm2, tiny,
synthetic; default sst2); layout=primer (the seed's: the text is never shown) | text (soft prompt before the
receiver_text prompt); every other key goes to the base file's variant (tokens=K, steps, lr, batch, seed, root,
task, scale). The base's `bridge` section stays only for bridge.weight_decay_on; the sender is never loaded.
"""
import os

from configs.telepathy import common


def get_config(arg=None):
    from latentjax.bridge.prompt_tuning import prompt_tuning_section
    from latentjax.train.config_tools import load_config

    variant = common.parse_arg(arg)
    base = variant.pop("base", "sst2")
    layout = variant.pop("layout", "primer")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{base}.py")
    if base in ("prompt_tuning", "common") or not os.path.isfile(path):
        raise ValueError(f"base must name a telepathy config file in configs/telepathy/, got {base!r}.")
    rest = ",".join(f"{k}={v}" for k, v in variant.items())
    config = load_config(path + (f":{rest}" if rest else ""))
    config.experiment = "prompt_tuning"
    config.prompt_tuning = prompt_tuning_section(config.bridge.num_latents, layout)
    return config
