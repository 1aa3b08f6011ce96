"""AG News through the bridge. Headline protocol (the 88.9% run, run_agnews.sh @dcc40131): batch 64 per step
(4 microbatches of 16), lr 2e-4 constant, 3000 steps, sender layer 31, K=8, output scale = receiver's median
embedding RMS. Quick evals of 100 test rows, final 200 (the standalone reference eval used 1000:
--config.eval.final_num_samples=1000). Offline, the train split is the 8,794-row sample in shared/data.
"""
from configs.telepathy import common


def get_config(arg=None):
    return common.bridge_config("ag_news", steps=3000, batch_size=64, grad_accum=4, lr=2e-4, num_latents=8,
                                layer=31, eval_every=200, num_samples=100, final_num_samples=200, arg=arg)
