"""Passkey retrieval through the bridge (train_telepathy_passkey.py @dcc40131): batch 8, lr 1e-4 constant, 1000
steps, sender layer 31, K=16 (ablation `:tokens=32` / 64 / 128), output scale fixed at 0.03, 10 generated tokens.
Training codes: 16,000 drawn from a seeded stream; eval codes: Python's random.seed(42) stream (50 every 200
steps, 100 at the end), as the reference. `--config.task.options.haystack_sentences=N` pads the code sentence
with N filler sentences (our extension; 0 = the seed's one-sentence setting).
"""
from configs.telepathy import common


def get_config(arg=None):
    config = common.bridge_config(
        "passkey", steps=1000, batch_size=8, grad_accum=1, lr=1e-4, num_latents=16, layer=31, output_scale="fixed",
        eval_every=200, num_samples=50, final_num_samples=100,
        task_options=dict(haystack_sentences=0, needle_depth=-1.0, train_size=16000, train_seed=0, eval_seed=42,
                          eval_size=100),
        arg=arg)
    config.eval.label_scoring = False  # no label set
    return config
