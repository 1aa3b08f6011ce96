"""Banking77 through the bridge (train_telepathy_banking77.py @dcc40131): batch 8, lr 1e-4 constant, 3000 steps,
sender layer 31, K=16 (token ablation: `:tokens=32` / 64 / 128), output scale fixed at 0.03, 20 generated tokens.

The reference scored the first 200 rows of the class-sorted test split (5 of 77 intents). Here the final eval is
the whole test split (final_num_samples=0); the seed's slice is `--config.eval.final_num_samples=200` with
subset "first", a stated stratified sample `--config.eval.subset=stratified --config.eval.final_num_samples=770`.
Quick evals use a stratified sample of 154 (2 per intent).
"""
from configs.telepathy import common


def get_config(arg=None):
    config = common.bridge_config("banking77", steps=3000, batch_size=8, grad_accum=1, lr=1e-4, num_latents=16,
                                  layer=31, output_scale="fixed", eval_every=500, num_samples=154,
                                  final_num_samples=0, arg=arg)
    config.eval.subset = "stratified"
    return config
