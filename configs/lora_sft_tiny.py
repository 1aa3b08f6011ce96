"""LoRA SFT of SmolLM2-135M-Instruct on a few GSM8K problems: a smoke run, a few minutes on a CPU (float32).

    python launch/train.py --config=configs/lora_sft_tiny.py --workdir=/tmp/lora_tiny
    python launch/train.py --config=configs/lora_sft_tiny.py:/path/to/hf_model --workdir=/tmp/lora_other

The argument is an HF Llama/Mistral folder (default: the offline SmolLM2 copy, converted from the packaged GGUF).
Export the trained adapter with `latentjax.lora.export_peft`.
"""
from configs import base
from latentjax.lora.experiment import data_section, lora_section, model_section


def get_config(arg=None):
    if not arg:
        from latentjax.convert.gguf import smollm2_path

        arg = smollm2_path()
    config = base.get_config()
    config.experiment = "lora_sft"
    config.seed = 42
    config.model = model_section(arg, dtype="float32", remat_policy="none")
    config.lora = lora_section(rank=8, alpha=16.0, dropout=0.05, targets="all")
    config.data = data_section(name="gsm8k", seq_len=256)
    config.data.update(prompt_field="question", completion_field="answer", eval_split="test", num_examples=32,
                       max_eval_examples=4, eval_batch_size=4, buckets=(128, 256))
    config.train = base.train(steps=6, batch_size=2, compute_dtype="")
    config.optimizer = base.optimizer(lr=2e-4, warmup_steps=2, decay="cosine")
    config.checkpoint = base.checkpoint(every=3, keep_last=1, keep_best=1, best_metric="eval/loss")
    config.eval_every = 3
    config.logging.log_every = 1
    return config
