"""LoRA SFT of SmolLM2-135M-Instruct on GSM8K train, held-out loss on GSM8K test (the GPU proof of issue 6).

    python launch/train.py --config=configs/lora_sft_smollm2_gsm8k.py:/path/to/smollm2 --workdir=/tmp/lora_gsm8k

The argument is an HF Llama/Mistral folder (default: the offline SmolLM2 copy, converted from the packaged GGUF).
bf16 compute and frozen base, float32 LoRA masters; rank 16 on all seven projections; the eval loss on 500 test
problems every 50 steps is the held-out curve (metrics.jsonl, key eval/loss).
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
    config.model = model_section(arg, dtype="bfloat16", remat_policy="none")
    config.lora = lora_section(rank=16, alpha=32.0, dropout=0.05, targets="all")
    config.data = data_section(name="gsm8k", seq_len=512)
    config.data.update(prompt_field="question", completion_field="answer", eval_split="test",
                       max_eval_examples=500, eval_batch_size=100, buckets=(256, 512))
    config.train = base.train(steps=400, batch_size=32)
    config.optimizer = base.optimizer(lr=3e-4, warmup_steps=20, decay="cosine")
    config.checkpoint = base.checkpoint(every=200, keep_last=1, keep_best=1, best_metric="eval/loss")
    config.eval_every = 50
    config.eval_at_start = True
    config.logging.log_every = 25
    return config
