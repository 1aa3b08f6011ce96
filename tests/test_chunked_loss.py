"""Chunked next-token loss: the same sums and LoRA gradients as the full-logits path, tied and untied heads, chunks
that do not divide the length, padding and prompt masks; the config switch reaches the lora_sft builder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.lora import LoraConfig, init_lora, lora_apply
from latentjax.lora import sft
from latentjax.models.config import DecoderConfig
from latentjax.models.model import init_params
from latentjax.parallel import rules as rules_lib
from latentjax.train import chunked_loss

T = 11


def _setup(tied: bool):
    cfg = DecoderConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=8, tie_word_embeddings=tied)
    lcfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    base = init_params(cfg, jax.random.key(0))
    lora = rules_lib.unbox(init_lora(cfg, lcfg, jax.random.key(1)))
    rs = np.random.RandomState(2)
    lora = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(rs.randn(*x.shape), x.dtype), lora)  # B != 0
    ids = jnp.asarray(rs.randint(1, cfg.vocab_size, (3, T)), jnp.int32)
    lengths = np.asarray([[T], [8], [5]])
    attn = jnp.asarray(np.arange(T)[None] < lengths)  # rows 1 and 2 right-padded
    loss_mask = jnp.asarray(np.arange(T)[None] >= np.asarray([[4], [2], [1]])) & attn  # prompt masked
    return cfg, lcfg, base, lora, {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("tied", [False, True])
def test_loss_metrics_and_lora_grads_match_full_logits(tied):
    cfg, lcfg, base, lora, batch = _setup(tied)
    grad_fn = lambda chunk, bwd="fused": jax.jit(jax.value_and_grad(
        sft.make_loss_fn(cfg, lcfg, loss_chunk=chunk, loss_backward=bwd), has_aux=True))
    (loss0, m0), g0 = grad_fn(0)(lora, base, batch, None)
    assert float(m0["target_tokens"]) == float(jnp.sum(batch["loss_mask"][:, 1:]))
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g0))
    # 4 and 3 leave a remainder of T = 11; 64 > T is one chunk
    cases = [(4, "fused"), (4, "recompute")] if not tied else [(3, "fused"), (64, "recompute")]
    for chunk, bwd in cases:
        (loss, m), g = grad_fn(chunk, bwd)(lora, base, batch, None)
        assert _rel(loss, loss0) < 1e-5, chunk
        assert float(m["target_tokens"]) == float(m0["target_tokens"])
        assert float(m["token_accuracy"]) == float(m0["token_accuracy"])
        for leaf, leaf0 in zip(jax.tree.leaves(g), jax.tree.leaves(g0)):
            assert _rel(leaf, leaf0) < 1e-5, chunk


@pytest.mark.parametrize("tied", [False, True])
def test_sums_match_token_losses_and_head(tied):
    """The raw sums (not only their ratio) and the head product equal the decoder's own."""
    cfg, lcfg, base, lora, batch = _setup(tied)
    ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    out = jax.jit(lambda b, l: lora_apply(cfg, b, l, lcfg, ids, attn))(base, lora)
    head, axis = chunked_loss.head_weight(base, cfg)
    assert head.shape == ((cfg.vocab_size, cfg.hidden_size) if tied else (cfg.hidden_size, cfg.vocab_size))
    np.testing.assert_allclose(chunked_loss.head_logits(out.hidden, head, axis), out.logits, rtol=1e-5, atol=1e-6)
    full = sft.token_losses(out.logits, ids, mask, attn)
    sums = jax.jit(chunked_loss.chunked_token_losses, static_argnames=("chunk", "embed_axis"))
    got = sums(out.hidden, head, ids, mask, attn, chunk=5, embed_axis=axis)
    for a, b in zip(got, full):
        assert _rel(a, b) < 1e-5
    no_attn = sums(out.hidden, head, ids, mask, chunk=T, embed_axis=axis)
    assert [float(x) for x in no_attn[1:]] == [float(x) for x in sft.token_losses(out.logits, ids, mask)[1:]]


def test_head_gradient_recompute_only():
    """Without the decoder: "recompute" differentiates w.r.t. hidden and head like the full logits; "fused" gives
    the same hidden gradient and refuses to differentiate its closed-over head."""
    rs = np.random.RandomState(5)
    hidden, head = jnp.asarray(rs.randn(2, 7, 16), jnp.float32), jnp.asarray(rs.randn(16, 29), jnp.float32)
    ids = jnp.asarray(rs.randint(0, 29, (2, 7)))
    mask = jnp.asarray(rs.rand(2, 7) > 0.3)
    full = lambda h, w: sft.token_losses(chunked_loss.head_logits(h, w, 0), ids, mask)[0]
    chunked = lambda bwd: lambda h, w: chunked_loss.chunked_token_losses(h, w, ids, mask, chunk=3, backward=bwd)[0]
    want = jax.grad(full, argnums=(0, 1))(hidden, head)
    got = jax.jit(jax.grad(chunked("recompute"), argnums=(0, 1)))(hidden, head)
    assert _rel(got[0], want[0]) < 1e-5 and _rel(got[1], want[1]) < 1e-5
    assert _rel(jax.jit(jax.grad(chunked("fused")))(hidden, head), want[0]) < 1e-5
    with pytest.raises(Exception, match="tracer"):
        jax.grad(chunked("fused"), argnums=1)(hidden, head)
    with pytest.raises(ValueError, match="Unknown chunked-loss backward"):
        chunked("both")(hidden, head)


def test_bad_chunk_and_missing_head_raise():
    cfg, lcfg, base, lora, batch = _setup(False)
    hidden = jnp.zeros((3, T, cfg.hidden_size))
    with pytest.raises(ValueError, match="chunk >= 1"):
        chunked_loss.chunked_token_losses(hidden, base["lm_head"]["kernel"], batch["input_ids"],
                                          batch["loss_mask"], chunk=0)
    with pytest.raises(ValueError, match="no lm_head"):
        chunked_loss.head_weight({k: v for k, v in base.items() if k != "lm_head"}, cfg)


def test_eval_fn_chunked_matches_full():
    cfg, lcfg, base, lora, batch = _setup(True)
    mesh = rules_lib.single_device_mesh()
    host = {k: np.asarray(v) for k, v in batch.items()}
    full = sft.make_eval_fn(cfg, lcfg, base, [host], mesh)(lora, 0)
    chunked = sft.make_eval_fn(cfg, lcfg, base, [host], mesh, loss_chunk=4)(lora, 0)
    assert chunked["tokens"] == full["tokens"]
    assert chunked["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert chunked["token_accuracy"] == full["token_accuracy"]


def test_config_switch_reaches_the_loss(tmp_path):
    """model.loss_chunk of the lora_sft config (default 0: off) reaches build's train loss: the same loss as the
    full-logits build, through a real HF folder (tied embeddings) and the builder (eval: test above)."""
    import json

    from latentjax.lora.experiment import build, default_config, lora_section, model_section
    from latentjax.testing import save_tiny_hf_model
    from tests.test_lora_sft import char_tokenizer

    path = str(tmp_path / "model")
    save_tiny_hf_model(path, "llama", seed=3, vocab_size=101, tie_word_embeddings=True)
    char_tokenizer().save_pretrained(path)
    rows = [{"prompt": f"{i}+{i}=?", "completion": f"{2 * i} so the answer is {2 * i}"} for i in range(12)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert model_section().loss_chunk == 0 and model_section().loss_backward == "fused"
    mesh = rules_lib.single_device_mesh()
    outs = []
    for chunk in (0, 7):
        config = default_config()
        config.model = model_section(path, dtype="float32", remat_policy="none", loss_chunk=chunk)
        config.lora = lora_section(rank=4, alpha=8.0, targets="all")
        config.data.update(path=str(tmp_path / "train.jsonl"), seq_len=64, buckets=(64,), eval_batch_size=2,
                           eval_fraction=0.2)
        config.train.batch_size = 2
        exp = build(config, mesh)
        assert exp.frozen["embed_tokens"]["embedding"].shape[0] == 101 and "lm_head" not in exp.frozen
        lora = rules_lib.unbox(exp.init_trainable(jax.random.key(0)))
        lora = jax.tree.map(lambda x: x + 0.03, lora)
        assert exp.eval_fn is not None
        batch = next(exp.train_data)
        with jax.set_mesh(mesh):
            loss, metrics = jax.jit(exp.loss_fn)(lora, exp.frozen, batch, None)
        outs.append((float(loss), float(metrics["target_tokens"])))
    (loss0, n0), (loss1, n1) = outs
    assert n1 == n0 > 0 and loss1 == pytest.approx(loss0, rel=1e-5)
