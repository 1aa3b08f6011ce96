"""The Telepathy bridge: shapes, output scaling, normalizer, calibration, FSQ, diversity loss, parameter count,
the bridged loss against the PyTorch receiver fed the same inputs_embeds, and where gradients flow."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import latentjax
from latentjax.bridge import fsq
from latentjax.bridge.batching import EncodeExample, collate, pad_batch
from latentjax.bridge.calibration import calibrate, with_calibration
from latentjax.bridge.experiment import calibration_batches
from latentjax.bridge.forward import (BridgedModel, SenderTap, answer_nll, diversity_loss, insert_soft_tokens,
                                      resolve_layer, sender_hidden, sender_params_for_tap)
from latentjax.bridge.model import (CALIBRATION, Bridge, BridgeConfig, count_params, init_bridge, median_row_rms,
                                    normalize)
from latentjax.bridge.tiny import ensure_tiny_pair
from latentjax.parallel import rules as rules_lib
from tests.conftest import relative_error

EXAMPLES = [  # hand-written task examples (no dataset needed)
    {"id": 0, "sender_text": "Review: a charming and often affecting journey .\nSentiment (positive or negative):",
     "answer": " positive", "label": 1, "gold": "positive"},
    {"id": 1, "sender_text": "Review: bleak\nSentiment (positive or negative):", "answer": " negative", "label": 0,
     "gold": "negative"},
    {"id": 2, "sender_text": "Review: the plot is thin but the acting carries it along nicely enough\n"
     "Sentiment (positive or negative):", "answer": " positive", "label": 1, "gold": "positive"},
]


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    sender_path, receiver_path = ensure_tiny_pair(str(tmp_path_factory.mktemp("bridge_pair")))
    return latentjax.from_pretrained(sender_path), latentjax.from_pretrained(receiver_path)


@functools.lru_cache(maxsize=None)
def hf_sender(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def small_config(**kw) -> BridgeConfig:
    base = dict(sender_dim=72, receiver_dim=48, num_latents=4, depth=2, num_heads=4, width=32,
                output_scale_init=0.05)
    base.update(kw)
    return BridgeConfig(**base)


def unboxed_init(cfg, seed=0):
    return rules_lib.unbox(jax.jit(functools.partial(init_bridge, cfg))(jax.random.PRNGKey(seed)))


def apply(cfg, variables, h, mask):
    return jax.jit(Bridge(cfg).apply)(variables, h, mask)


def make_model(pair, cfg, layer=-2, diversity_weight=0.1):
    sender, receiver = pair
    model = BridgedModel(SenderTap.make(sender.config, layer), cfg, receiver.config, diversity_weight)
    frozen = {"sender": sender_params_for_tap(sender.config, sender.params, layer), "receiver": receiver.params}
    return model, frozen


def make_batch(pair, k, examples=EXAMPLES):
    sender, receiver = pair
    enc = EncodeExample(sender.tokenizer, receiver.tokenizer, "Sentiment:", k, 128, True)
    return collate(enc, examples, pad_batch(sender.tokenizer.pad_token_id, receiver.tokenizer.pad_token_id, 128))


# ---------------------------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(), dict(width=None), dict(sender_dim=48, width=None), dict(fsq_levels=(5,) * 6)])
def test_output_shape_and_per_token_rms_equals_scale(kw):
    cfg = small_config(**kw)
    variables = unboxed_init(cfg)
    variables["params"]["output_scale"] = jnp.asarray([0.37])
    h = jax.random.normal(jax.random.PRNGKey(1), (3, 11, cfg.sender_dim))
    mask = jnp.asarray(np.arange(11)[None] >= np.array([[0], [4], [9]]))  # left padding
    out = apply(cfg, variables, h, mask)
    assert out.soft_tokens.shape == (3, cfg.num_latents, cfg.receiver_dim)
    rms = np.sqrt(np.mean(np.square(np.asarray(out.soft_tokens)), axis=-1))
    np.testing.assert_allclose(rms, 0.37, rtol=1e-5)


def test_projections_exist_only_when_widths_differ():
    assert {"input_proj", "output_proj"} <= set(unboxed_init(small_config())["params"])
    ref = unboxed_init(small_config(sender_dim=48, width=None))["params"]  # reference: equal widths, no projection
    assert not {"input_proj", "output_proj"} & set(ref)


def test_sender_padding_is_masked_in_cross_attention():
    cfg = small_config()
    variables = unboxed_init(cfg)
    h = jax.random.normal(jax.random.PRNGKey(2), (1, 6, 72))
    mask = jnp.asarray([[0, 0, 1, 1, 1, 1]], bool)
    junk = h.at[:, :2].set(100.0)  # whatever sits under the padding must not matter
    a = apply(cfg, variables, h, mask).soft_tokens
    b = apply(cfg, variables, junk, mask).soft_tokens
    c = apply(cfg, variables, h[:, 2:], mask[:, 2:]).soft_tokens
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_soft_tokens_ignore_sender_left_padding(pair):
    """Through the sender too: a prompt alone, behind 13 extra masked pads (holding junk ids), and beside a longer row
    in one batch gives the same soft tokens to float32 rounding."""
    sender, _ = pair
    cfg = small_config()
    model, frozen = make_model(pair, cfg)
    variables = unboxed_init(cfg)
    ids = sender.tokenizer("a short prompt", add_special_tokens=True)["input_ids"]
    longer = sender.tokenizer("a much longer prompt that needs far more tokens than the short one",
                              add_special_tokens=True)["input_ids"]
    n, pad = len(ids), 13
    width = len(longer)
    rows = {
        "alone": (np.asarray([ids]), np.ones((1, n), np.int32)),
        "padded": (np.asarray([[7] * pad + ids]), np.asarray([[0] * pad + [1] * n])),
        "batched": (np.asarray([[0] * (width - n) + ids, longer]),
                    np.asarray([[0] * (width - n) + [1] * n, [1] * width])),
    }
    soft = jax.jit(lambda i, m: model.soft_tokens(variables, frozen, i, m).soft_tokens)
    out = {k: np.asarray(soft(jnp.asarray(i, jnp.int32), jnp.asarray(m, jnp.int32)))[:1] for k, (i, m) in rows.items()}
    np.testing.assert_allclose(out["padded"], out["alone"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["batched"], out["alone"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(soft(jnp.asarray(rows["batched"][0][1:]), jnp.ones((1, width), jnp.int32))),
                           out["alone"], atol=1e-4)  # a different prompt does change them


def test_initialisation_follows_the_reference():
    cfg = small_config(width=64, num_latents=256)
    p = unboxed_init(cfg)["params"]
    assert abs(float(np.std(p["latents"])) - 0.02) < 0.002
    q = np.asarray(p["block_0"]["cross_attn"]["query"]["kernel"])
    assert np.abs(q).max() <= math.sqrt(6 / (4 * 64)) and np.abs(q).max() > 0.9 * math.sqrt(6 / (4 * 64))
    assert float(np.abs(p["block_0"]["cross_attn"]["query"]["bias"]).max()) == 0.0
    assert np.abs(p["block_0"]["mlp_down"]["kernel"]).max() <= 1 / math.sqrt(256)
    np.testing.assert_array_equal(p["block_0"]["ln1"]["scale"], 1.0)
    np.testing.assert_allclose(p["output_scale"], [0.05])


def test_parameters_carry_bridge_logical_axes():
    boxed = init_bridge(small_config(fsq_levels=(8,) * 4), jax.random.PRNGKey(0))
    known = dict(rules_lib.DEFAULT_RULES)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for box in leaves:
        assert len(box.names) == box.value.ndim
        assert all(n in known for n in box.names), box.names


def test_parameter_count_matches_leaf_sum_and_closed_form():
    for cfg in (small_config(), small_config(width=None), small_config(sender_dim=48, width=None),
                small_config(fsq_levels=(5,) * 6, depth=3)):
        assert count_params(init_bridge(cfg, jax.random.PRNGKey(0))["params"]) == cfg.num_params
    # The reference bridge (Llama-8B -> Mistral-7B, width 4096, depth 2, 8 heads): telepathy_reference.md §1.5.
    for k, expected in ((8, 537_059_329), (16, 537_092_097), (128, 537_550_849)):
        cfg = BridgeConfig(sender_dim=4096, receiver_dim=4096, num_latents=k)
        assert cfg.num_params == expected
    shapes = jax.eval_shape(lambda r: init_bridge(BridgeConfig(4096, 4096, num_latents=8), r), jax.random.PRNGKey(0))
    assert count_params(shapes["params"]) == 537_059_329


def test_normalizer_golden_values():
    h = jnp.asarray([[[1.0, 2.0], [3.0, -1.0]]])
    stats = {"sender_mean": jnp.asarray([0.0, 1.0]), "sender_std": jnp.asarray([2.0, 4.0]),
             "receiver_mean": jnp.asarray([10.0, 20.0]), "receiver_std": jnp.asarray([3.0, 5.0])}
    # (1-0)/2*3+10, (2-1)/4*5+20, (3-0)/2*3+10, (-1-1)/4*5+20
    np.testing.assert_allclose(normalize(h, stats), [[[11.5, 21.25], [14.5, 17.5]]], rtol=1e-6)
    scalar = dict(stats, receiver_mean=jnp.asarray(1.0), receiver_std=jnp.asarray(0.5))
    np.testing.assert_allclose(normalize(h, scalar), [[[1.25, 1.125], [1.75, 0.75]]], rtol=1e-6)


def test_calibrated_bridge_applies_the_affine_map():
    cfg = small_config(calibrated=True)
    variables = unboxed_init(cfg)
    assert set(variables[CALIBRATION]) == {"sender_mean", "sender_std", "receiver_mean", "receiver_std"}
    rs = np.random.RandomState(0)
    stats = {"sender_mean": rs.randn(72), "sender_std": rs.rand(72) + 0.5, "receiver_mean": np.asarray(0.3),
             "receiver_std": np.asarray(2.0)}
    calibrated = with_calibration(variables, stats)
    h = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 72))
    mask = jnp.ones((2, 5), bool)
    by_hand = (h - stats["sender_mean"]) / (stats["sender_std"] + 1e-8) * 2.0 + 0.3
    plain = small_config()
    ours = apply(cfg, calibrated, h, mask).soft_tokens
    ref = apply(plain, {"params": variables["params"]}, by_hand.astype(jnp.float32), mask).soft_tokens
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    identity = apply(cfg, variables, h, mask).soft_tokens  # identity statistics at init
    np.testing.assert_allclose(identity, apply(plain, {"params": variables["params"]}, h, mask).soft_tokens,
                               rtol=1e-5, atol=1e-7)


def test_median_row_rms():
    table = np.asarray([[3.0, 4.0], [1.0, 1.0], [0.0, 2.0]])  # row RMS: sqrt(12.5), 1, sqrt(2)
    assert median_row_rms(table) == pytest.approx(math.sqrt(2.0))


# ---------------------------------------------------------------------------------------------------------------
# FSQ and the diversity loss
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [(5, 5, 5), (8, 8, 8), (3, 8, 5)])
def test_fsq_quantises_to_the_level_grid_and_passes_gradients(levels):
    z = jax.random.normal(jax.random.PRNGKey(0), (4000, len(levels))) * 3
    q = np.asarray(jax.jit(fsq.quantize, static_argnums=1)(z, levels))
    for i, lv in enumerate(levels):
        values = np.unique(q[:, i])
        grid = fsq.grid(lv)
        assert np.all(np.min(np.abs(values[:, None] - grid[None]), axis=1) < 1e-6)
        assert len(values) == lv  # every level reached
    g = jax.grad(lambda x: jnp.sum(fsq.quantize(x, levels)))(z[:8])
    expected = jax.grad(lambda x: jnp.sum(fsq.bound(x, levels) / jnp.asarray([lv // 2 for lv in levels])))(z[:8])
    np.testing.assert_allclose(g, expected, rtol=1e-6)  # straight-through: the bound's derivative
    assert np.all(np.asarray(g) > 0)


def test_diversity_loss_golden_values():
    a = jnp.asarray([[1.0, 2.0], [0.5, -1.0]])  # one example's K=2 x D=2 soft tokens
    assert float(diversity_loss(jnp.stack([a, a, 3 * a]))) == pytest.approx(1.0, abs=1e-6)
    e = jnp.eye(4).reshape(4, 2, 2)  # four mutually orthogonal flattened sets
    assert float(diversity_loss(e)) == pytest.approx(0.0, abs=1e-7)
    # v0 = (1,0,0,0), v1 = (1,1,0,0)/sqrt2, v2 = (-1,0,0,0): S01 = 1/sqrt2, S02 = -1, S12 = -1/sqrt2 -> mean -1/3
    v = jnp.asarray([[1.0, 0, 0, 0], [1, 1, 0, 0], [-1, 0, 0, 0]]).reshape(3, 2, 2)
    assert float(diversity_loss(v)) == pytest.approx(-1 / 3, abs=1e-6)
    assert float(diversity_loss(v[:1])) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Sender tap, receiver sequence, loss
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1, -2, 3, -1])
def test_sender_tap_equals_hf_hidden_states(pair, layer):
    sender, _ = pair
    ids, mask = (np.asarray(x) for x in sender.tokenizer(["a short one", "a somewhat longer sentence here"],
                                                         padding=True, return_tensors="np").values())
    tap = SenderTap.make(sender.config, layer)
    ours = np.asarray(sender_hidden(tap, sender_params_for_tap(sender.config, sender.params, layer), ids, mask))
    ref = np.asarray(sender.hidden_states(layer, ids, mask))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    hf = hf_sender(sender.path)
    with torch.no_grad():
        out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(np.maximum(mask.cumsum(1) - 1, 0)), output_hidden_states=True)
    hf_h = out.hidden_states[resolve_layer(layer, 3)].numpy()
    assert relative_error(ours[mask.astype(bool)], hf_h[mask.astype(bool)]) < 1e-4


def test_resolve_layer():
    assert [resolve_layer(i, 32) for i in (31, -2, -1, 0, -33)] == [31, 31, 32, 0, 0]
    with pytest.raises(ValueError, match="sender layer"):
        resolve_layer(33, 32)


def test_receiver_rows_are_primer_soft_slots_answer(pair):
    _, receiver = pair
    batch = make_batch(pair, k=3)
    tok = receiver.tokenizer
    primer = tok("Sentiment:", add_special_tokens=False)["input_ids"]
    for row, ex in enumerate(EXAMPLES):
        answer = tok(ex["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(primer) + 3 + len(answer)
        ids = batch["receiver_input_ids"][row]
        assert list(ids[:len(primer)]) == primer and list(ids[len(primer) + 3:n]) == answer
        assert batch["soft_start"][row] == len(primer)
        assert list(batch["receiver_loss_mask"][row]) == [0] * (len(primer) + 3) + [1] * len(answer) + [0] * (
            len(ids) - n)
        assert batch["receiver_attention_mask"][row].sum() == n and batch["receiver_attention_mask"][row][:n].all()
        sender = batch["sender_attention_mask"][row]
        assert sender[-1] == 1 and np.all(np.diff(sender) >= 0)  # left-padded


def test_insert_soft_tokens():
    embeds = jnp.zeros((2, 7, 3))
    soft = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 3) + 1
    out = np.asarray(insert_soft_tokens(embeds, soft, jnp.asarray([1, 4])))
    np.testing.assert_array_equal(out[0, 1:3], soft[0])
    np.testing.assert_array_equal(out[1, 4:6], soft[1])
    assert out[0, [0, 3, 4, 5, 6]].sum() == 0 and out[1, [0, 1, 2, 3, 6]].sum() == 0


def test_bridged_loss_matches_pytorch_receiver_fed_inputs_embeds(pair):
    """The receiver-side loss by hand with transformers: model(inputs_embeds=[primer]+[soft]+[answer])."""
    sender, receiver = pair
    cfg = small_config(output_scale_init=0.5)
    model, frozen = make_model(pair, cfg, diversity_weight=0.0)
    variables = unboxed_init(cfg)
    batch = make_batch(pair, k=4)
    loss, metrics = jax.jit(model.loss)(variables, frozen, {k: jnp.asarray(v) for k, v in batch.items()})
    soft = np.asarray(jax.jit(model.soft_tokens)(variables, frozen, batch["sender_input_ids"],
                                                 batch["sender_attention_mask"]).soft_tokens)

    hf = AutoModelForCausalLM.from_pretrained(receiver.path, dtype=torch.float32)
    ids = torch.tensor(batch["receiver_input_ids"], dtype=torch.long)
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(ids).clone()
        for b, start in enumerate(batch["soft_start"]):
            embeds[b, start:start + 4] = torch.tensor(soft[b])
        logits = hf(inputs_embeds=embeds, attention_mask=torch.tensor(batch["receiver_attention_mask"])).logits
    labels = torch.where(torch.tensor(batch["receiver_loss_mask"]) == 1, ids, torch.full_like(ids, -100))
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=-100).item()
    assert abs(float(metrics["lm_loss"]) - ref) / ref < 1e-4
    assert abs(float(loss) - ref) / ref < 1e-4  # diversity weight 0
    assert float(metrics["answer_tokens"]) == batch["receiver_loss_mask"][:, 1:].sum()


def test_total_loss_adds_weighted_diversity(pair):
    cfg = small_config()
    model, frozen = make_model(pair, cfg, diversity_weight=0.25)
    batch = {k: jnp.asarray(v) for k, v in make_batch(pair, k=4).items()}
    loss, m = jax.jit(model.loss)(unboxed_init(cfg), frozen, batch)
    assert float(loss) == pytest.approx(float(m["lm_loss"]) + 0.25 * float(m["diversity_loss"]), rel=1e-6)


def test_gradients_flow_only_to_the_bridge(pair):
    cfg = small_config(calibrated=True)
    model, frozen = make_model(pair, cfg)
    variables = unboxed_init(cfg)
    batch = {k: jnp.asarray(v) for k, v in make_batch(pair, k=4).items()}
    grads = jax.jit(jax.grad(lambda v, f, b: model.loss(v, f, b)[0]))(variables, frozen, batch)
    assert set(variables) == {"params", CALIBRATION}  # the trainable tree holds no frozen weight
    assert jax.tree.structure(grads) == jax.tree.structure(variables)
    flat = jax.tree_util.tree_flatten_with_path(grads["params"])[0]
    for path, g in flat:
        name = jax.tree_util.keystr(path)
        if "['key']['bias']" in name:  # softmax is invariant to the key bias: its gradient is exactly zero
            assert float(jnp.abs(g).max()) < 1e-6
        else:
            assert float(jnp.abs(g).max()) > 0, name
    for g in jax.tree.leaves(grads[CALIBRATION]):
        assert float(jnp.abs(g).max()) == 0.0
    n_frozen = sum(x.size for x in jax.tree.leaves(frozen))
    assert count_params(grads["params"]) == cfg.num_params < n_frozen


def test_label_scores_equal_the_answer_nll(pair):
    sender, receiver = pair
    cfg = small_config()
    model, frozen = make_model(pair, cfg)
    variables = unboxed_init(cfg)
    tok = receiver.tokenizer
    words = [" negative", " positive"]
    rows = [tok(w, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for w in words]
    width = max(map(len, rows))
    label_ids = np.zeros((2, width), np.int32)
    label_mask = np.zeros((2, width), np.int32)
    for i, r in enumerate(rows):
        label_ids[i, :len(r)], label_mask[i, :len(r)] = r, 1
    batch = make_batch(pair, k=4)
    primer = jnp.asarray(tok("Sentiment:", add_special_tokens=False)["input_ids"])
    prefix = jax.jit(model.prompt_embeds)(variables, frozen, batch["sender_input_ids"],
                                          batch["sender_attention_mask"], primer)
    scores = np.asarray(jax.jit(model.label_scores)(frozen, prefix, jnp.asarray(label_ids), jnp.asarray(label_mask)))

    @jax.jit
    def row_nll(one):
        out = model.soft_tokens(variables, frozen, one["sender_input_ids"], one["sender_attention_mask"])
        embeds = insert_soft_tokens(model.receiver_embed(frozen, one["receiver_input_ids"]), out.soft_tokens,
                                    one["soft_start"])
        logits = model.receiver_logits(frozen, embeds, one["receiver_attention_mask"])
        return answer_nll(logits, one["receiver_input_ids"], one["receiver_loss_mask"])[0]

    for b, ex in enumerate(EXAMPLES):  # the gold label's score = minus the training NLL of that row
        nll = row_nll({k: jnp.asarray(v[b:b + 1]) for k, v in batch.items()})
        assert scores[b, ex["label"]] == pytest.approx(-float(nll), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------------------------

def _masked_tokens(x, mask):
    return np.asarray(x, np.float64)[np.asarray(mask, bool)]


def test_calibration_statistics_equal_numpy(pair):
    sender, receiver = pair
    cfg = small_config(calibrated=True)
    model, frozen = make_model(pair, cfg, layer=2)
    texts = EXAMPLES + [dict(EXAMPLES[0], sender_text="Another, quite different prompt; with punctuation!")]
    batches = list(calibration_batches(texts, sender.tokenizer, receiver.tokenizer, 128, batch_size=2))
    stats = calibrate(model, frozen, batches)
    hs, es = [], []
    for b in batches:
        hs.append(_masked_tokens(sender.hidden_states(2, b["sender_input_ids"], b["sender_attention_mask"]),
                                 b["sender_attention_mask"]))
        es.append(_masked_tokens(receiver.embed(receiver.params, b["text_input_ids"]), b["text_attention_mask"]))
    h, e = np.concatenate(hs), np.concatenate(es)
    np.testing.assert_allclose(stats["sender_mean"], h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["sender_std"], h.std(0), rtol=1e-4, atol=1e-6)
    assert stats["receiver_mean"].shape == ()  # widths differ (72 vs 48): scalar receiver statistics
    np.testing.assert_allclose(stats["receiver_mean"], e.mean(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats["receiver_std"], e.std(), rtol=1e-4)
    pooled = calibrate(model, frozen, batches, pooling="sequence_mean")
    rows = np.stack([x.mean(0) for b in batches
                     for x in np.split(*_row_split(sender.hidden_states(2, b["sender_input_ids"],
                                                                        b["sender_attention_mask"]),
                                                   b["sender_attention_mask"]))])
    np.testing.assert_allclose(pooled["sender_mean"], rows.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pooled["sender_std"], rows.std(0), rtol=1e-4, atol=1e-6)


def _row_split(h, mask):
    """Masked tokens of each row, for np.split: (all tokens, split points)."""
    mask = np.asarray(mask, bool)
    return np.asarray(h, np.float64)[mask], np.cumsum(mask.sum(1))[:-1]


def test_calibration_per_dimension_receiver_stats_when_widths_match(pair):
    sender, receiver = pair
    cfg = BridgeConfig(sender_dim=48, receiver_dim=48, num_latents=2, num_heads=4, calibrated=True)
    model = BridgedModel(SenderTap.make(receiver.config, 0), cfg, receiver.config)
    frozen = {"sender": sender_params_for_tap(receiver.config, receiver.params, 0), "receiver": receiver.params}
    batches = list(calibration_batches(EXAMPLES, receiver.tokenizer, receiver.tokenizer, 128, batch_size=2))
    stats = calibrate(model, frozen, batches)
    e = np.concatenate([_masked_tokens(receiver.embed(receiver.params, b["text_input_ids"]),
                                       b["text_attention_mask"]) for b in batches])
    assert stats["receiver_mean"].shape == (48,)
    np.testing.assert_allclose(stats["receiver_mean"], e.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["receiver_std"], e.std(0), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------

def test_evaluator_scores_and_compiles_generation_once(pair, tmp_path):
    from latentjax.bridge.evaluate import Evaluator
    from latentjax.inference import generate as gen_lib
    from latentjax.tasks import SST2

    sender, receiver = pair
    cfg = small_config()
    model, frozen = make_model(pair, cfg)
    variables = unboxed_init(cfg)
    ev = Evaluator(model, SST2, EXAMPLES, sender.tokenizer, receiver.tokenizer, batch_size=2, max_new_tokens=3)
    before = gen_lib._generate._cache_size()
    summary, records = ev.evaluate(variables, frozen, str(tmp_path), name="sst2")
    assert gen_lib._generate._cache_size() - before <= 1  # two batches (the second padded), one compilation
    assert summary["n"] == len(records) == 3 and summary["max_new_tokens"] == 3
    assert (tmp_path / "sst2.jsonl").exists() and (tmp_path / "sst2.summary.json").exists()
    outputs, scores = ev.run(variables, frozen)
    assert [r["output"] for r in records] == outputs and scores.shape == (3, 2)
    for r, s in zip(records, scores):
        assert r["label_score_prediction"] == int(np.argmax(s))
        assert r["correct"] == SST2.score(r["output"], r)["correct"]
    assert summary["label_scoring"]["correct"] == sum(r["label_score_correct"] for r in records)
    assert np.asarray(summary["label_scoring"]["confusion"]).sum() == 3
