"""GSM8K translator, mistral to llama (source -> target), spec defaults; variants per configs/translator/common.py.

    python launch/train.py --config=configs/translator/mistral_to_llama.py:kind=cross --workdir=/runs/x \
        --config.model.sender.path=... --config.model.receiver.path=... --config.eval.output_dir=/runs/x/eval
"""
from configs.translator import common


def get_config(arg=None):
    return common.translator_config("mistral_to_llama", arg=arg)
