"""Generation: greedy equals transformers' generate token for token; sampling filters behave as HF's."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

import latentjax
from latentjax.inference.generate import generate
from latentjax.inference.sampling import SamplingConfig, _top_p_filter_sorted, sample
from tests.test_models import left_padded


@pytest.mark.parametrize("variant", ["llama31", "mistral_window", "llama2_tied"])
def test_greedy_batched_generation_matches_transformers(tiny_dirs, variant):
    path = tiny_dirs[variant]
    ids, mask = left_padded(np.random.RandomState(10), [5, 19, 11])
    model = latentjax.from_pretrained(path)
    ours = generate(model.config, model.params, ids, mask, max_new_tokens=32, stop_token_ids=[2], pad_token_id=0)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=32, do_sample=False,
                      eos_token_id=2, pad_token_id=0)[:, ids.shape[1]:].numpy()
    tokens = np.asarray(ours.tokens)
    np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref)
    assert (tokens[:, ref.shape[1]:] == 0).all()


def test_stop_tokens_end_rows_and_pad_the_rest(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    ids, mask = left_padded(np.random.RandomState(11), [6, 9])
    free = np.asarray(generate(model.config, model.params, ids, mask, max_new_tokens=12).tokens)
    stop = int(free[0, 3])  # make the 4th greedy token of row 0 a stop token
    out = generate(model.config, model.params, ids, mask, max_new_tokens=12, stop_token_ids=[stop], pad_token_id=-1)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    first = int(np.argmax(free[0] == stop))
    assert lengths[0] == first + 1
    assert (tokens[0, first + 1:] == -1).all() and tokens[0, first] == stop


def test_without_stop_tokens_the_decode_loop_has_a_known_length(tiny_dirs):
    """No row can stop early without stop tokens, so the loop's only condition is its counter: XLA then knows the
    trip count and runs the loop without reading a predicate back to the host each step (a GPU's WhileThunk).
    With stop tokens the loop keeps its all-rows-done exit."""
    from latentjax.inference.generate import _generate, decoder_apply
    from latentjax.inference.sampling import SamplingConfig as Sampling
    from latentjax.parallel import rules as rules_lib

    model = latentjax.from_pretrained(tiny_dirs["llama31"], scan_layers=False)  # no loop over layers
    ids = jnp.ones((2, 5), jnp.int32)

    def trip_counts(stops):
        kwargs = dict(apply_fn=decoder_apply(model.config), config=model.config, max_new_tokens=7,
                      sampling=Sampling(), stop_token_ids=stops, pad_token_id=0, rules=rules_lib.DEFAULT_RULES)
        hlo = _generate.lower(model.params, ids, jnp.ones((2, 5), bool), None, jax.random.key(0),
                              **kwargs).compile().as_text()
        return [line.split('"known_trip_count":{"n":"')[1].split('"')[0] if "known_trip_count" in line else None
                for line in hlo.splitlines() if " while(" in line]

    assert trip_counts(()) == ["6"]  # max_new_tokens - 1 forwards
    assert trip_counts((2,)) == [None]


def test_generation_from_embeddings_equals_from_ids(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["mistral_nowindow"])
    ids, mask = left_padded(np.random.RandomState(12), [8, 8])
    a = generate(model.config, model.params, ids, mask, max_new_tokens=10)
    b = generate(model.config, model.params, inputs_embeds=model.embed(model.params, ids), attention_mask=mask,
                 max_new_tokens=10)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_sampling_is_reproducible_by_key_and_top_k_1_is_greedy(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    ids, mask = left_padded(np.random.RandomState(13), [7, 4])
    run = lambda key, s: np.asarray(generate(model.config, model.params, ids, mask, max_new_tokens=16, sampling=s,
                                             rng=key).tokens)
    hot = SamplingConfig(temperature=1.0, top_p=0.95)
    a, b, c = run(jax.random.key(1), hot), run(jax.random.key(1), hot), run(jax.random.key(2), hot)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = run(None, SamplingConfig())
    np.testing.assert_array_equal(run(jax.random.key(3), SamplingConfig(temperature=0.7, top_k=1)), greedy)


def test_sampling_without_key_is_refused(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    with pytest.raises(ValueError, match="PRNG key"):
        generate(model.config, model.params, np.ones((1, 3), np.int32), sampling=SamplingConfig(temperature=1.0))


@pytest.mark.parametrize("bad", [dict(top_p=0.0), dict(top_p=1.5), dict(temperature=-1.0), dict(top_k=-2)])
def test_out_of_range_sampling_settings_are_refused(bad):
    with pytest.raises(ValueError, match="0 < top_p <= 1"):
        SamplingConfig(**bad)


def test_right_padded_prompts_are_refused(tiny_dirs):
    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    with pytest.raises(ValueError, match="left-padded"):
        generate(model.config, model.params, np.ones((1, 3), np.int32), np.array([[1, 1, 0]]))


def _nucleus(logits, top_p):
    """Which tokens the sampler accepts as candidates, every token of the vocabulary tried."""
    from latentjax.inference import sampling

    x = jnp.asarray(logits)
    top = jnp.max(x, axis=-1, keepdims=True)
    total = jnp.sum(jnp.exp(x - top), axis=-1, keepdims=True)
    every = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape)
    return np.asarray(sampling._accepts(x, top, total, every, top_p))


@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95])
def test_top_p_and_top_k_keep_the_same_tokens_as_transformers(top_p):
    logits = np.random.RandomState(14).randn(4, 50).astype(np.float32) * 3
    ref = np.isfinite(TopPLogitsWarper(top_p)(None, torch.tensor(logits)).numpy())
    np.testing.assert_array_equal(_nucleus(logits, top_p), ref)
    draw = jax.jit(jax.vmap(lambda key, cfg: sample(jnp.asarray(logits), key, cfg), in_axes=(0, None)),
                   static_argnums=1)
    keys = jax.random.split(jax.random.key(0), 200)
    draws = np.asarray(draw(keys, SamplingConfig(temperature=1.0, top_k=5)))
    allowed = np.isfinite(TopKLogitsWarper(5)(None, torch.tensor(logits)).numpy())
    assert all(allowed[row, draws[:, row]].all() for row in range(4))
    draws = np.asarray(draw(keys, SamplingConfig(temperature=1.0, top_k=5, top_p=top_p)))
    allowed &= np.isfinite(TopPLogitsWarper(top_p)(None, torch.tensor(np.where(allowed, logits, -np.inf))).numpy())
    assert all(allowed[row, draws[:, row]].all() for row in range(4))


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95, 0.999])
def test_top_p_accepts_exactly_the_tokens_of_the_sorted_definition(top_p):
    rs = np.random.RandomState(3)
    logits = (rs.randn(16, 2000) * rs.uniform(0.5, 8, (16, 1))).astype(np.float32)
    logits[:4] = np.round(logits[:4])  # many ties, also at the threshold
    logits[4, ::3] = -np.inf  # rows already cut by top-k
    logits[5] = -50.0 - np.arange(2000) * 1e-3  # all negative
    logits[6, 7] = 1e4  # one certain token
    fast = _nucleus(logits, top_p)
    slow = np.isfinite(np.asarray(_top_p_filter_sorted(jnp.asarray(logits), top_p)))
    assert fast.sum(axis=1).min() >= 1
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1), np.float64)
    for row in np.where((fast != slow).any(axis=1))[0]:
        # Only a float32 rounding tie may differ: the mass above the two thresholds straddles top_p by < 1e-5.
        t_fast, t_slow = logits[row][fast[row]].min(), logits[row][slow[row]].min()
        masses = [probs[row][logits[row] > t].sum() for t in (t_fast, t_slow)]
        assert max(abs(m - top_p) for m in masses) < 1e-5, (row, masses)
    assert (fast != slow).any(axis=1).sum() <= 1


@pytest.mark.parametrize("vocab, top_p", [(2048, 0.9), (2048, 0.3), (61, 0.95)])
def test_top_p_draws_follow_the_renormalised_nucleus(vocab, top_p):
    """A chi-square test of 20,000 draws per row against the nucleus's renormalised probabilities. 2,048 = 8 blocks
    of 256; 61 (prime) is padded to one block; top-p 0.3 rejects often, so most rows need several rounds."""
    from scipy import stats

    from latentjax.inference import sampling

    rs = np.random.RandomState(vocab)
    logits = (rs.randn(2, vocab) * 2.5).astype(np.float32)
    logits[1, ::2] = -np.inf
    n = 20_000
    draws = np.asarray(sampling._sample_top_p(jnp.asarray(np.tile(logits, (n, 1))), jax.random.key(0), top_p))
    draws = draws.reshape(n, 2)
    kept = np.asarray(_top_p_filter_sorted(jnp.asarray(logits), top_p))
    for row in range(2):
        probs = np.asarray(jax.nn.softmax(jnp.asarray(kept[row])), np.float64)
        assert np.isfinite(kept[row, draws[:, row]]).all()  # no draw outside the nucleus
        counts = np.bincount(draws[:, row], minlength=vocab)
        # Most likely first; the tail of cells with < 5 expected draws is pooled into the last larger one.
        order = np.argsort(-probs)
        expected, observed = n * probs[order], counts[order]
        big = int((expected >= 5).sum())
        cells_e = np.append(expected[:big - 1], expected[big - 1:].sum())
        cells_o = np.append(observed[:big - 1], observed[big - 1:].sum())
        p = stats.chisquare(cells_o, cells_e * cells_o.sum() / cells_e.sum()).pvalue
        assert p > 1e-3, (row, p, len(cells_e))


def test_repeated_calls_reuse_the_compiled_loop(tiny_dirs):
    from latentjax.inference.generate import _generate

    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    ids = np.ones((2, 5), np.int32)
    generate(model.config, model.params, ids, max_new_tokens=4)
    before = _generate._cache_size()
    generate(model.config, model.params, ids + 1, max_new_tokens=4)
    assert _generate._cache_size() == before


def test_wide_batch_compile_options_reach_the_compile_and_an_unknown_one_falls_back(tiny_dirs, monkeypatch):
    """From WIDE_DECODE_BATCH rows on one GPU, generation compiles with WIDE_DECODE_OPTIONS (XLA's defaults
    elsewhere). Forced here on the CPU (which accepts the GPU option): the same tokens as the default compile. An
    option this XLA does not know is proven to reach the compile by its refusal, which falls back with a warning."""
    from latentjax.inference import generate as gen_lib
    from latentjax.parallel import rules as rules_lib

    one, eight = rules_lib.single_device_mesh(), type("Mesh", (), {"size": 8})()
    assert gen_lib.decode_compiler_options(64, one) is None  # this CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert gen_lib.decode_compiler_options(64, one) == gen_lib.WIDE_DECODE_OPTIONS
    assert gen_lib.decode_compiler_options(63, one) is None and gen_lib.decode_compiler_options(8, one) is None
    assert gen_lib.decode_compiler_options(64, eight) is None  # measured on one GPU only
    monkeypatch.undo()

    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    ids = np.random.RandomState(2).randint(3, model.config.vocab_size, (3, 6)).astype(np.int32)
    hot = SamplingConfig(temperature=1.0, top_p=0.9)
    plain = generate(model.config, model.params, ids, max_new_tokens=5, sampling=hot, rng=jax.random.key(1))
    monkeypatch.setattr(gen_lib, "WIDE_DECODE_BATCH", 2)
    monkeypatch.setattr(gen_lib, "decode_compiler_options",
                        lambda batch, mesh: dict(gen_lib.WIDE_DECODE_OPTIONS) if batch >= 2 else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this XLA knows the option: no fallback
        wide = generate(model.config, model.params, ids, max_new_tokens=5, sampling=hot, rng=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(wide.tokens), np.asarray(plain.tokens))
    assert gen_lib._generate_with.cache_info().currsize >= 1
    monkeypatch.setattr(gen_lib, "decode_compiler_options",
                        lambda batch, mesh: {"xla_gpu_no_such_option_in_any_xla": 1})
    with pytest.warns(UserWarning, match="does not know the compile option"):
        again = generate(model.config, model.params, ids, max_new_tokens=5, sampling=hot, rng=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(plain.tokens))
    assert (("xla_gpu_no_such_option_in_any_xla", 1),) in gen_lib._REFUSED_OPTIONS


def test_unstacked_layers_give_the_same_logits_hidden_states_and_generation(tiny_dirs):
    from latentjax.models.model import unstack_layers

    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    flat = latentjax.from_pretrained(tiny_dirs["llama31"], scan_layers=False)
    assert "layers" not in flat.params and f"layers_{model.config.num_layers - 1}" in flat.params
    cfg2, params2 = unstack_layers(model.config, model.params)
    np.testing.assert_array_equal(np.asarray(params2["layers_1"]["mlp"]["up_proj"]["kernel"]),
                                  np.asarray(model.params["layers"]["mlp"]["up_proj"]["kernel"][1]))
    rs = np.random.RandomState(5)
    ids = rs.randint(3, model.config.vocab_size, (2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    np.testing.assert_allclose(np.asarray(flat(ids, mask)), np.asarray(model(ids, mask)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(flat.hidden_states(1, ids, mask)),
                               np.asarray(model.hidden_states(1, ids, mask)), rtol=1e-5, atol=1e-5)
    from latentjax.models.decoder import KVCache

    per_layer = KVCache.zeros(flat.config, 2, 4, np.float32)  # one cache array per layer, read in place
    assert isinstance(per_layer.k, tuple) and len(per_layer.k) == flat.config.num_layers
    assert per_layer.k[0].shape == (2, 4, flat.config.num_kv_heads, flat.config.head_dim)
    a = generate(model.config, model.params, ids, mask, max_new_tokens=6)
    b = generate(flat.config, flat.params, ids, mask, max_new_tokens=6)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


@pytest.mark.parametrize("variant,scan", [("llama31", False), ("llama_bias", True), ("mistral_window", False)])
def test_fused_projections_give_the_same_logits_and_generation(tiny_dirs, variant, scan):
    from latentjax.models.model import fuse_projections
    from tests.conftest import relative_error

    path = tiny_dirs[variant]
    model = latentjax.from_pretrained(path, scan_layers=scan)
    fused = latentjax.from_pretrained(path, scan_layers=scan, fused_projections=True)
    layer = fused.params["layers"] if scan else fused.params["layers_0"]
    assert set(layer["self_attn"]) == {"qkv_proj", "o_proj"} and set(layer["mlp"]) == {"gate_up_proj", "down_proj"}
    cfg = model.config
    assert layer["self_attn"]["qkv_proj"]["kernel"].shape[-1] == (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    assert layer["mlp"]["gate_up_proj"]["kernel"].shape[-1] == 2 * cfg.intermediate_size
    assert ("bias" in layer["self_attn"]["qkv_proj"]) == cfg.attention_bias
    ids = np.random.RandomState(7).randint(3, cfg.vocab_size, (2, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :4] = 0
    assert relative_error(fused(ids, mask), model(ids, mask)) < 1e-5
    # the same transform applied to loaded params, and a fused config passes through unchanged
    cfg2, params2 = fuse_projections(model.config, model.params)
    assert fuse_projections(cfg2, params2)[1] is params2
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(params2)[0]), np.asarray(jax.tree.leaves(fused.params)[0]))
    a = generate(model.config, model.params, ids, mask, max_new_tokens=5)
    b = generate(fused.config, fused.params, ids, mask, max_new_tokens=5)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_lora_on_a_fused_base_generates_like_the_separate_one(tiny_dirs):
    """A model loaded with fused projections takes the same adapter (PEFT's per-projection factors): adapter
    generation and the merged model give the separate base's tokens."""
    from latentjax.lora import LoraConfig, LoraForward, init_lora, merged_model
    from latentjax.parallel import rules as rules_lib

    model = latentjax.from_pretrained(tiny_dirs["llama31"])
    fused = latentjax.from_pretrained(tiny_dirs["llama31"], fused_projections=True)
    cfg = LoraConfig(rank=2, alpha=4.0)
    lora = rules_lib.unbox(init_lora(fused.config, cfg, jax.random.key(0)))
    lora = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), lora)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, model.config.vocab_size, (2, 7)), jnp.int32)
    runs = [generate(m.config, {"base": m.params, "lora": lora}, ids, max_new_tokens=6,
                     apply_fn=LoraForward(m.config, cfg)).tokens for m in (model, fused)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    plain = generate(model.config, model.params, ids, max_new_tokens=6).tokens
    assert not np.array_equal(np.asarray(plain), np.asarray(runs[0]))  # the adapter changes the tokens
    merged = merged_model(fused, lora, cfg)
    np.testing.assert_array_equal(np.asarray(generate(merged.config, merged.params, ids, max_new_tokens=6).tokens),
                                  np.asarray(runs[0]))

@pytest.mark.parametrize("variant,scan,fused", [("llama31", False, True), ("llama_bias", True, False),
                                                ("mistral_window", False, False)])
def test_folded_norm_scales_give_the_same_logits_and_generation(tiny_dirs, variant, scan, fused):
    """The layers' RMSNorm scales moved into the q/k/v and gate/up rows: the same float32 logits and tokens, no
    scale left in those norms (the final norm keeps its own), and folding twice changes nothing."""
    from latentjax.models.model import fold_norm_scales
    from tests.conftest import relative_error

    path = tiny_dirs[variant]
    model = latentjax.from_pretrained(path, scan_layers=scan, fused_projections=fused)
    folded = latentjax.from_pretrained(path, scan_layers=scan, fused_projections=fused, folded_norms=True)
    layer = folded.params["layers"] if scan else folded.params["layers_0"]
    assert "input_layernorm" not in layer and "post_attention_layernorm" not in layer
    assert "scale" in folded.params["norm"]
    plain_layer = model.params["layers"] if scan else model.params["layers_0"]
    scale = np.asarray(plain_layer["input_layernorm"]["scale"])
    assert np.abs(scale - 1).max() > 0.05  # the tiny models' norms are perturbed: a dropped scale would show
    first = "qkv_proj" if fused else "q_proj"
    np.testing.assert_allclose(np.asarray(layer["self_attn"][first]["kernel"]),
                               np.asarray(plain_layer["self_attn"][first]["kernel"]) * scale[..., None], rtol=1e-6)
    cfg = model.config
    ids = np.random.RandomState(3).randint(3, cfg.vocab_size, (2, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    valid = mask.astype(bool)
    assert relative_error(np.asarray(folded(ids, mask))[valid], np.asarray(model(ids, mask))[valid]) < 1e-5
    assert fold_norm_scales(folded.config, folded.params)[1] is folded.params
    a = generate(model.config, model.params, ids, mask, max_new_tokens=5)
    b = generate(folded.config, folded.params, ids, mask, max_new_tokens=5)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_lora_refuses_a_base_with_folded_norms(tiny_dirs):
    """A LoRA factor reads the scaled input, which a folded base no longer forms: init, forward and merge say so."""
    from latentjax.lora import LoraConfig, init_lora, lora_apply, merge
    from latentjax.parallel import rules as rules_lib

    plain = latentjax.from_pretrained(tiny_dirs["llama31"])
    folded = latentjax.from_pretrained(tiny_dirs["llama31"], folded_norms=True)
    cfg = LoraConfig(rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="folded_norms=False"):
        init_lora(folded.config, cfg, jax.random.key(0))
    lora = rules_lib.unbox(init_lora(plain.config, cfg, jax.random.key(0)))
    ids = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="folded_norms=False"):
        lora_apply(folded.config, folded.params, lora, cfg, ids)
    with pytest.raises(ValueError, match="folded_norms=False"):
        merge(folded.params, lora, cfg, folded.config)
