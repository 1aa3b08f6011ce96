"""SST-2 through the bridge. Headline protocol (the 94.7% run, run_sst2.sh @dcc40131): 2 GPUs x batch 16 x
accumulation 2 = 64 examples per step (here: batch 64 in 4 microbatches of 16, so the diversity loss sees 16 as
there), lr 2e-4 constant, 2000 steps, sender layer 31, K=8, output scale = receiver's median embedding RMS.

    python launch/train.py --config=configs/telepathy/sst2.py --workdir=runs/sst2 \
        --config.model.sender.path=/models/Llama-3.1-8B-Instruct \
        --config.model.receiver.path=/models/Mistral-7B-Instruct-v0.3
"""
from configs.telepathy import common


def get_config(arg=None):
    return common.bridge_config("sst2", steps=2000, batch_size=64, grad_accum=4, lr=2e-4, num_latents=8, layer=31,
                                eval_every=200, num_samples=50, final_num_samples=200, arg=arg)
