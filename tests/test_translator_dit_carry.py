"""The DiT translator's CPU carry test (issue 8), the `dit` twin of `test_translator_carry.py`, with a weaker claim.

Fixture: the same tiny random Llama source -> tiny random Mistral target (no sliding window, init 0.25) and the same
questions (three filler words and a digit d that only the source reads), answers "d\\n#### d"; `soft_only` with K = 1
soft token and nothing else before the answer (train_context "reference"); the `dit` translator (attention pooling,
width 64, depth 2) trained through the registry ("translator", configs/translator/tiny.py) and the shared loop
with the flow loss alone (answer teacher: the endpoint x1 is the target embedding of the answer's first token, the
digit), 600 steps, lr 3e-3, batch 16.

Claimed (what the DiT is trained to do): it generates, conditioned on the source, the digit's embedding.
  * the flow loss falls well below its initial value (~1 + E[x1^2] with the zero-initialised velocity);
  * soft tokens Euler-sampled as at evaluation (4 steps from seeded noise, no teacher) are, on 200 held-out rows,
    nearest to the row's own digit embedding far above chance (1/10), for most digits;
  * controls on the same trained weights: sources with the digit replaced by "x" give chance; a neighbour's source
    (digit d + 1) moves the sample to that digit.
NOT claimed: that the target then reads the digit. With the target NLL in the loss (weight 1) and 300 steps the
samples stayed at chance (K = 6 and K = 1 both measured, 0.095 and 0.115 nearest-digit accuracy), and with mean
pooling 600 steps gave 0.315; attention pooling at 600 steps gave 0.91, the run fixed here. The flow plateaus at the
unconditional solution (~0.3) until about step 500, so the budget is close to the edge: seed 0 gives 0.910 (digit
hidden 0.085, neighbour followed 0.930), seed 1 0.820 (0.050, 0.860); DIT_SEED=N runs another seed. The cross translator's test is the target-side carry proof.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.eval.stats import accuracy_summary
from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import make_mesh
from latentjax.train import config_tools, loop, registry
from latentjax.translator import data as data_lib
from tests.test_translator_carry import CHANCE, DIGITS, ROOT, TEST_SIZE, carry_rows, tiny_pair

STEPS = 600
NUM_TOKENS = 1  # the answer teacher's first token: the digit
LR = 3e-3


def dit_rows(size: int, seed: int, hide: bool = False) -> list[dict]:
    """The carry test's questions; answer "d\\n#### d" (official GSM8K format, the digit first)."""
    return [{**r, "answer": f"{r['answer'][-1]}\n#### {r['answer'][-1]}"} for r in carry_rows(size, seed, hide)]


def write_rows(data_dir) -> str:
    os.makedirs(data_dir / "gsm8k", exist_ok=True)
    for split, size, seed in (("train", 2000, 0), ("test", TEST_SIZE, 1)):
        with open(data_dir / "gsm8k" / f"{split}.jsonl", "w") as f:
            for row in dit_rows(size, seed):
                f.write(json.dumps(row) + "\n")
    return str(data_dir)


def train_dit(tmp, pair):
    sender, receiver = pair
    config = config_tools.load_config(
        os.path.join(ROOT, "configs", "translator", "tiny.py")
        + f":root={os.path.dirname(sender)},kind=dit,mode=soft_only,context=reference,teacher=answer,"
          f"steps={STEPS},lr={LR},batch=16,tokens={NUM_TOKENS},seed={os.environ.get('DIT_SEED', 0)}")
    config.model.sender.path, config.model.receiver.path = sender, receiver
    config.data.path = write_rows(tmp / "data")
    config.data.train_limit = 0
    config.translator.dit.update(width=64, depth=2, num_heads=4, cond_width=64, time_dim=32, pooling="attention")
    for term in ("nll", "kl", "rope_alignment", "prompt_alignment", "info_nce", "prompt_contrast", "aux_probe",
                 "format", "token_alignment"):
        config.loss[term] = 0.0
    config.loss.dit_flow = 1.0
    config.eval_every = STEPS
    config.checkpoint.every = STEPS
    config.logging.log_every = 1
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_lib, "TRAIN_PROMPT", "{question}")  # the source reads the question only
        experiment = registry.get("translator")(config, mesh)
        experiment = dataclasses.replace(experiment, eval_fn=None)
        result = loop.train(config, experiment, mesh, str(tmp / "run"))
    assert result.step == STEPS
    with open(tmp / "run" / "metrics.jsonl") as f:
        flow = [r["train/dit_flow_loss"] for r in map(json.loads, f) if "train/dit_flow_loss" in r]
    return experiment, result.state.params, flow, mesh


def nearest_digits(experiment, params, mesh, rows) -> np.ndarray:
    """Per row, the digit whose target embedding is nearest the Euler-sampled soft token (evaluation path:
    `eval_soft_tokens`, 4 steps from seeded noise) given the row's source."""
    from transformers import AutoTokenizer

    model = experiment.loss_fn.__self__
    tok = AutoTokenizer.from_pretrained(experiment.fingerprint["receiver"])
    encode = data_lib.Encode(tok, tok, NUM_TOKENS, batch_size=len(rows), mode="soft_only", context="reference")
    pad = data_lib.pad_batch(tok.pad_token_id, tok.pad_token_id, NUM_TOKENS, 128, 384)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_lib, "TRAIN_PROMPT", "{question}")
        batch = pad([encode.map_with_index(i, r) for i, r in enumerate(rows)])
    digit_ids = jnp.asarray([[tok.convert_tokens_to_ids(str(d))] for d in range(DIGITS)])
    assert [tok.decode(i) for i in np.asarray(digit_ids)] == [str(d) for d in range(DIGITS)]
    with rules_lib.activate(mesh):
        soft = jax.jit(model.eval_soft_tokens)(params, experiment.frozen, jnp.asarray(batch["sender_input_ids"]),
                                               jnp.asarray(batch["sender_attention_mask"]), jax.random.PRNGKey(7))
        table = jax.jit(model.embed)(experiment.frozen, digit_ids)[:, 0]  # [10, D]
    soft, table = np.asarray(soft[:, 0], np.float64), np.asarray(table, np.float64)
    return np.argmin(np.sum((soft[:, None] - table[None]) ** 2, axis=-1), axis=1)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("translator_dit_carry")


def test_dit_samples_the_digit_only_the_source_sees(tmp):
    experiment, params, flow, mesh = train_dit(tmp, tiny_pair(tmp / "pair"))
    rows = dit_rows(TEST_SIZE, 1)
    gold = np.asarray([int(r["answer"][-1]) for r in rows])
    ok = nearest_digits(experiment, params, mesh, rows) == gold
    acc = accuracy_summary(ok)
    per_digit = [float(np.mean(ok[gold == d])) for d in range(DIGITS)]
    # Controls on the same weights: the digit hidden from the source; a neighbour's source (digit d + 1).
    hidden = nearest_digits(experiment, params, mesh, dit_rows(TEST_SIZE, 1, hide=True)) == gold
    order = np.argsort(gold, kind="stable")
    shifted = [rows[i] for i in order]
    swapped = [shifted[(i + TEST_SIZE // DIGITS) % TEST_SIZE] for i in range(TEST_SIZE)]
    moved = nearest_digits(experiment, params, mesh, [{**r, "question": s["question"]}
                                                      for r, s in zip(shifted, swapped)])
    follows = float(np.mean(moved == np.asarray([int(s["answer"][-1]) for s in swapped])))
    print(f"dit, {STEPS} steps, flow only: flow loss {flow[0]:.3f} -> {np.mean(flow[-10:]):.3f} (last 10); sampled "
          f"soft token nearest to the row's digit {acc.accuracy:.3f} (95% CI {acc.ci_low:.3f}-{acc.ci_high:.3f}, "
          f"chance {CHANCE}); per digit {[round(a, 2) for a in per_digit]}; digit hidden {np.mean(hidden):.3f}; "
          f"neighbour's source followed {follows:.3f}")
    assert np.mean(flow[-10:]) < 0.4 * flow[0]
    assert acc.ci_low > 3 * CHANCE
    assert sum(a >= 0.5 for a in per_digit) >= 6  # most digits, not one constant sample
    assert np.mean(hidden) <= 2 * CHANCE
    assert follows >= 0.5
