"""The Flax ports equal transformers (PyTorch, CPU): logits, hidden states, padding, config forms, errors."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import latentjax
from latentjax.models.config import ConfigError, from_hf_dict, load_hf_config
from latentjax.models.loading import CheckpointError
from tests.conftest import TINY_VARIANTS, relative_error

F32_TOL = 1e-4
BF16_TOL = 2e-2


def hf_logits(path, ids, mask=None, dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    kwargs = {}
    if mask is not None:
        kwargs = dict(attention_mask=torch.tensor(mask), position_ids=torch.tensor(np.maximum(mask.cumsum(1) - 1, 0)))
    with torch.no_grad():
        return model(torch.tensor(ids), **kwargs).logits.float().numpy()


def left_padded(rs, lengths, vocab=331):
    t = max(lengths)
    ids = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = rs.randint(3, vocab, size=n)
        mask[i, t - n:] = 1
    return ids, mask


@pytest.mark.parametrize("variant", list(TINY_VARIANTS))
def test_float32_logits_match_transformers(tiny_dirs, variant):
    path = tiny_dirs[variant]
    ids = np.random.RandomState(0).randint(3, 331, size=(2, 200))  # long: short prompts hide RoPE bugs
    ours = np.asarray(latentjax.from_pretrained(path)(ids))
    assert ours.shape == (2, 200, 331)
    assert relative_error(ours, hf_logits(path, ids)) < F32_TOL


@pytest.mark.parametrize("variant", ["llama31", "mistral_window"])
def test_left_padded_batch_matches_transformers_and_unpadded(tiny_dirs, variant):
    path = tiny_dirs[variant]
    ids, mask = left_padded(np.random.RandomState(1), [37, 12, 25])
    model = latentjax.from_pretrained(path)
    ours = np.asarray(model(ids, mask))
    ref = hf_logits(path, ids, mask)
    valid = mask.astype(bool)
    assert relative_error(ours[valid], ref[valid]) < F32_TOL
    alone = np.asarray(model(ids[1:2, -12:]))  # the 12-token prompt without its padding
    assert relative_error(ours[1, -12:], alone[0]) < F32_TOL


def test_sliding_window_changes_logits_only_beyond_window(tiny_dirs):
    cfg = load_hf_config(tiny_dirs["mistral_window"])
    assert cfg.sliding_window == 7
    ids = np.random.RandomState(2).randint(3, 331, size=(1, 30))
    windowed = latentjax.from_pretrained(tiny_dirs["mistral_window"])
    full = latentjax.from_pretrained(tiny_dirs["mistral_window"], sliding_window=None)
    a, b = np.asarray(windowed(ids)), np.asarray(full(ids))
    np.testing.assert_allclose(a[0, :7], b[0, :7], rtol=1e-5, atol=1e-5)  # inside the window: identical
    assert np.abs(a[0, 10:] - b[0, 10:]).max() > 1e-3  # beyond it: the window must matter


def test_inputs_embeds_equals_input_ids(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    ids = np.random.RandomState(3).randint(3, 331, size=(2, 20))
    embeds = model.embed(model.params, ids)
    np.testing.assert_allclose(np.asarray(model(None, inputs_embeds=embeds)), np.asarray(model(ids)), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 2, 3, -1, -2])
def test_hidden_states_match_transformers_numbering(tiny_dirs, layer):
    path = tiny_dirs["llama31"]
    ids, mask = left_padded(np.random.RandomState(4), [30, 18])
    ours = np.asarray(latentjax.from_pretrained(path).hidden_states(layer, ids, mask))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(np.maximum(mask.cumsum(1) - 1, 0)),
                 output_hidden_states=True).hidden_states[layer].numpy()
    valid = mask.astype(bool)
    assert relative_error(ours[valid], ref[valid]) < F32_TOL


def test_sharded_safetensors_checkpoint_loads(tiny_dirs, tmp_path):
    src = tiny_dirs["llama31"]
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    ids = np.random.RandomState(5).randint(3, 331, size=(1, 40))
    assert relative_error(latentjax.from_pretrained(str(tmp_path))(ids), hf_logits(src, ids)) < F32_TOL


def test_transformers4_config_keys_give_same_model(tiny_dirs, tmp_path):
    """Real checkpoints carry top-level rope_theta / rope_scaling (transformers 4.x), not rope_parameters."""
    src = tiny_dirs["llama31"]
    shutil.copytree(src, tmp_path / "old", dirs_exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        raw = json.load(f)
    params = raw.pop("rope_parameters")
    raw["rope_theta"] = params.pop("rope_theta")
    raw["rope_scaling"] = params
    with open(tmp_path / "old" / "config.json", "w") as f:
        json.dump(raw, f)
    new_cfg, old_cfg = load_hf_config(src), load_hf_config(str(tmp_path / "old"))
    assert new_cfg == old_cfg and new_cfg.rope.rope_type == "llama3" and new_cfg.rope.theta == 500000.0
    ids = np.random.RandomState(6).randint(3, 331, size=(1, 64))
    np.testing.assert_array_equal(np.asarray(latentjax.from_pretrained(src)(ids)),
                                  np.asarray(latentjax.from_pretrained(str(tmp_path / "old"))(ids)))


@pytest.mark.parametrize("variant", ["llama31", "mistral_window"])
def test_bfloat16_logits_match_transformers_bfloat16(tiny_dirs, variant):
    path = tiny_dirs[variant]
    ids = np.random.RandomState(7).randint(3, 331, size=(2, 128))
    ours = np.asarray(latentjax.from_pretrained(path, dtype="bfloat16")(ids))
    assert relative_error(ours, hf_logits(path, ids, dtype=torch.bfloat16)) < BF16_TOL


def test_unsupported_architecture_and_rope_are_named():
    base = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=10, hidden_size=8,
                intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ConfigError, match="GPTNeoXForCausalLM"):
        from_hf_dict(dict(base, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"]))
    with pytest.raises(ConfigError, match="yarn"):
        from_hf_dict(dict(base, rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    with pytest.raises(ConfigError, match="longrope"):
        from_hf_dict(dict(base, rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}))


def test_missing_files_and_mismatched_weights_are_clear_errors(tiny_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        latentjax.from_pretrained(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    shutil.copytree(tiny_dirs["llama31"], empty)
    os.remove(empty / "model.safetensors")
    with pytest.raises(CheckpointError, match="No model.safetensors"):
        latentjax.from_pretrained(str(empty))
    # config says 4 layers, weights have 3
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_dirs["llama31"], wrong)
    with open(wrong / "config.json") as f:
        raw = json.load(f)
    raw["num_hidden_layers"] = 4
    raw["intermediate_size"] = 140
    with open(wrong / "config.json", "w") as f:
        json.dump(raw, f)
    with pytest.raises(CheckpointError, match="missing|shape"):
        latentjax.from_pretrained(str(wrong))


def test_tokenizer_larger_than_embedding_is_refused(smollm2_dir, tiny_dirs, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_dirs["llama31"], folder)
    for name in os.listdir(smollm2_dir):
        if name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(os.path.join(smollm2_dir, name), folder / name)
    model = latentjax.from_pretrained(str(folder))
    with pytest.raises(ValueError, match="49152 tokens but the model's embedding matrix has 331"):
        model.tokenizer


def test_unrolled_layer_scan_gives_the_same_logits(tiny_dirs):
    ids = np.random.RandomState(8).randint(3, 331, size=(2, 33))
    scanned = np.asarray(latentjax.from_pretrained(tiny_dirs["llama31"])(ids))
    unrolled = np.asarray(latentjax.from_pretrained(tiny_dirs["llama31"], scan_unroll=3)(ids))
    assert relative_error(unrolled, scanned) < 1e-6


def test_attention_auto_picks_cudnn_only_where_it_applies(monkeypatch):
    import jax
    import jax.numpy as jnp

    from latentjax.models import decoder

    q = lambda t, dtype=jnp.bfloat16, h=128: jnp.zeros((1, t, 4, h), dtype)  # noqa: E731
    assert decoder.attention_implementation("auto", q(64), q(64)) == "xla"  # this CPU
    assert decoder.attention_implementation("cudnn", q(1), q(8)) == "cudnn"  # an explicit choice stands
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        decoder.attention_implementation("cuddn", q(64), q(64))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert decoder.attention_implementation("auto", q(64), q(128)) == "cudnn"
    assert decoder.attention_implementation("auto", q(1), q(128)) == "xla"  # a decode step: one query row
    assert decoder.attention_implementation("auto", q(63), q(63)) == "xla"  # odd lengths: cuDNN's backward refuses
    assert decoder.attention_implementation("auto", q(64, jnp.float32), q(64, jnp.float32)) == "xla"
    assert decoder.attention_implementation("auto", q(64, h=12), q(64, h=12)) == "xla"
    # the Pallas decode kernel: always when asked for by name (decode steps only)
    assert decoder.attention_implementation("pallas", q(1), q(128), decoding=True) == "pallas"
    assert decoder.attention_implementation("pallas", q(64), q(128), decoding=True) == "cudnn"  # a prefill chunk
    assert decoder.attention_implementation("pallas", q(1), q(128)) == "xla"  # no cache: not a decode step
    # "auto": the kernel where batch x kv heads < 1024 (batches 1, 8 and 64 of an 8-kv-head model measured), XLA's
    # above
    assert decoder.attention_implementation("auto", q(1), q(128), decoding=True) == "pallas"
    rows = lambda b: jnp.zeros((b, 1, 32, 128), jnp.bfloat16)  # noqa: E731
    cache = lambda b: jnp.zeros((b, 128, 8, 128), jnp.bfloat16)  # noqa: E731
    assert decoder.attention_implementation("auto", rows(1), cache(1), decoding=True) == "pallas"
    assert decoder.attention_implementation("auto", rows(8), cache(8), decoding=True) == "pallas"
    assert decoder.attention_implementation("auto", rows(15), cache(15), decoding=True) == "pallas"
    assert decoder.attention_implementation("auto", rows(64), cache(64), decoding=True) == "pallas"
    assert decoder.attention_implementation("auto", rows(127), cache(127), decoding=True) == "pallas"
    assert decoder.attention_implementation("auto", rows(128), cache(128), decoding=True) == "xla"
    assert decoder.attention_implementation("auto", q(1, jnp.float32), q(128, jnp.float32), decoding=True) == "xla"
    default = decoder.AUTO_DECODE_KERNEL_BELOW
    monkeypatch.setattr(decoder, "AUTO_DECODE_KERNEL_BELOW", 0)
    assert decoder.attention_implementation("auto", q(1), q(128), decoding=True) == "xla"
    monkeypatch.setattr(decoder, "AUTO_DECODE_KERNEL_BELOW", default)
    # a floor on the query positions cuDNN takes (short rows to XLA's); an explicit "cudnn" still stands
    monkeypatch.setattr(decoder, "AUTO_CUDNN_MIN_QUERIES", 64)
    assert decoder.attention_implementation("auto", q(48), q(48)) == "xla"
    assert decoder.attention_implementation("auto", q(64), q(64)) == "cudnn"
    assert decoder.attention_implementation("cudnn", q(48), q(48)) == "cudnn"
    monkeypatch.setattr(jax, "device_count", lambda: 8)  # a custom kernel is not partitioned over a mesh
    assert decoder.attention_implementation("auto", q(1), q(128), decoding=True) == "xla"


def test_index_causal_hint_changes_no_real_token(monkeypatch):
    """Without a cache and with positions the decoder numbers itself, the attention mask is marked index-causal and
    the cuDNN path is asked for causal masking on top of it (block skipping). Emulated here with XLA computing the
    same thing (mask AND key index <= query index): left- and right-padded rows give the same logits at every real
    token; explicit positions or a cache never get the hint."""
    import jax
    import jax.numpy as jnp

    from latentjax.models import decoder
    from latentjax.models.config import DecoderConfig

    cfg = DecoderConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=8, sliding_window=5)
    params = latentjax.models.model.init_params(cfg, jax.random.key(0))
    ids = np.random.RandomState(0).randint(1, 61, (3, 12))
    mask = np.ones((3, 12), bool)
    mask[0, :4] = False  # left padding
    mask[1, 9:] = False  # right padding
    fwd = lambda **kw: decoder.Decoder(cfg).apply({"params": params}, ids, attention_mask=mask, **kw).logits  # noqa
    reference = np.asarray(fwd())

    real = jax.nn.dot_product_attention
    asked = []

    def as_cudnn(q, k, v, mask=None, is_causal=False, implementation=None):
        asked.append(is_causal)
        if is_causal:
            mask = mask & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
        return real(q, k, v, mask=mask, implementation="xla")

    monkeypatch.setattr(decoder, "attention_implementation", lambda choice, q, k, decoding=False: "cudnn")
    monkeypatch.setattr(jax.nn, "dot_product_attention", as_cudnn)
    hinted = np.asarray(fwd())
    assert asked == [True] * cfg.num_layers
    np.testing.assert_allclose(hinted[mask], reference[mask], rtol=1e-5, atol=1e-5)
    asked.clear()
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    np.testing.assert_allclose(np.asarray(fwd(positions=positions)), reference, rtol=1e-6, atol=1e-6)
    assert asked == [False] * cfg.num_layers


def test_a_cached_conversion_keeps_the_folder_another_process_finished_first(tmp_path):
    """Two processes converting the offline model into one cache at once (pytest workers, hosts of one job): the
    second to finish keeps the first folder, which readers may already use; an explicit conversion replaces it."""
    from latentjax.convert.gguf import publish

    def folder(name: str, text: str) -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "model.safetensors").write_text(text)
        return str(path)

    out = str(tmp_path / "model")
    publish(folder("a", "first"), out, replace=False)
    assert open(os.path.join(out, "model.safetensors")).read() == "first"
    late = folder("b", "second")
    publish(late, out, replace=False)
    assert open(os.path.join(out, "model.safetensors")).read() == "first" and os.path.isdir(late)
    publish(late, out, replace=True)
    assert open(os.path.join(out, "model.safetensors")).read() == "second" and not os.path.exists(late)


def test_per_layer_random_init_is_the_stacked_one_split():
    """`init_params` of a per-layer config initialises the stacked layout and splits it (seconds to compile instead
    of minutes at 32 layers): the same values as `unstack_layers` of the scanned config's init, the same tree and
    shapes as the per-layer Decoder's own init, and a forward pass equal to the scanned model's."""
    import jax

    from latentjax.models.config import DecoderConfig
    from latentjax.models.decoder import Decoder
    from latentjax.models.model import init_params, unstack_layers

    cfg = DecoderConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                        num_kv_heads=2, head_dim=8)
    flat_cfg = cfg.replace(scan_layers=False)
    stacked, flat = init_params(cfg, jax.random.key(1)), init_params(flat_cfg, jax.random.key(1))
    own = latentjax.parallel.rules.unbox(jax.eval_shape(
        lambda: Decoder(flat_cfg).init(jax.random.key(1), np.zeros((1, 1), np.int32))["params"]))
    assert jax.tree.structure(flat) == jax.tree.structure(own)
    assert jax.tree.map(np.shape, flat) == jax.tree.map(lambda a: a.shape, own)
    for a, b in zip(jax.tree.leaves(unstack_layers(cfg, stacked)[1]), jax.tree.leaves(flat)):
        np.testing.assert_array_equal(a, b)
    ids = np.random.RandomState(0).randint(1, 61, (2, 7))
    np.testing.assert_allclose(Decoder(flat_cfg).apply({"params": flat}, ids).logits,
                               Decoder(cfg).apply({"params": stacked}, ids).logits, rtol=1e-5, atol=1e-6)
    assert not np.allclose(flat["layers_0"]["self_attn"]["q_proj"]["kernel"],
                           flat["layers_1"]["self_attn"]["q_proj"]["kernel"])  # each layer its own draw
