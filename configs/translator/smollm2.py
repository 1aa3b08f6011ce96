"""GPU check of the issue: SmolLM2-135M-Instruct -> SmolLM2-135M-Instruct on real GSM8K (shared/data), bounded
training, 500 test items at the final evaluation. Both modes by variant (and the curriculum):

    python launch/train.py --config=configs/translator/smollm2.py:mode=soft_plus_text --workdir=/tmp/tr_spt \
        --config.eval.output_dir=/tmp/tr_spt/eval
    python launch/train.py --config=configs/translator/smollm2.py:mode=soft_only,context=mode --workdir=/tmp/tr_so \
        --config.eval.output_dir=/tmp/tr_so/eval
    python -m latentjax.translator.summarize /tmp/tr_spt/eval /tmp/tr_so/eval

Source and target are the same model, so source-alone accuracy equals target-alone and is not computed twice.
`model=DIR` points both at an HF folder (default: the converted offline SmolLM2, `latentjax.convert.gguf`).
`launch/gpu_translator_smollm2.py` runs both modes, the baselines and the summary in one job.
"""
from configs.translator import common


def get_config(arg=None):
    variant = common.parse_arg(arg)
    for key, value in (("steps", 1000), ("batch", 8), ("tokens", 32), ("kind", "dit")):
        variant.setdefault(key, str(value))
    path = variant.pop("model", "")
    config = common.translator_config("llama_to_mistral", arg=",".join(f"{k}={v}" for k, v in variant.items()))
    if not path:
        from latentjax.convert.gguf import smollm2_path

        path = smollm2_path()
    config.model = common.base.model_pair(path, path, dtype="bfloat16")
    config.model.sender.layer = -1
    config.eval.update(num_samples=200, final_num_samples=500, batch_size=50, source_alone=False)
    config.eval_every = 250
    return config
