"""GSM8K translator, llama to mistral (source -> target), spec defaults; variants per configs/translator/common.py.

    python launch/train.py --config=configs/translator/llama_to_mistral.py:kind=cross --workdir=/runs/x \
        --config.model.sender.path=... --config.model.receiver.path=... --config.eval.output_dir=/runs/x/eval
"""
from configs.translator import common


def get_config(arg=None):
    return common.translator_config("llama_to_mistral", arg=arg)
