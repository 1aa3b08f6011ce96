"""Batched generation: one jitted prefill plus a `lax.while_loop` decode over a KV cache.

Prompts are left-padded (an attention mask marks the real tokens), so every row's next token sits in the last
column. `apply_fn(params, input_ids, attention_mask, positions, inputs_embeds, cache)` is the model's pure forward
(`Decoder.apply` by default); adapters pass their own forward, so generation knows nothing of LoRA or bridges.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.inference.sampling import SamplingConfig, sample
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder, KVCache
from latentjax.parallel import rules as rules_lib


@flax.struct.dataclass
class GenerationOutput:
    tokens: jax.Array  # [batch, max_new_tokens], pad_token_id after a stop token
    lengths: jax.Array  # [batch] tokens generated, the stop token included


@functools.lru_cache(maxsize=None)
def decoder_apply(config: DecoderConfig) -> Callable:
    """The plain decoder forward in the signature generation expects. Cached: the function is a static argument of
    the jitted loop, so a fresh partial per call would recompile every time."""
    return functools.partial(_decoder_apply, config)


def _decoder_apply(config, params, input_ids, attention_mask, positions, inputs_embeds, cache):
    return Decoder(config).apply({"params": params}, input_ids, attention_mask, positions, inputs_embeds, cache)


# XLA options for generation at a wide batch on one GPU. At batch 64 XLA's GEMM autotuner picks split-K for the
# decode step's narrow projections (q/k/v, o, down), which then write float32 partials that the next fusions sum;
# forcing one split made the 8B sender's b64 sample 2.6-3.4% faster on an H100 (516-522 vs 535-537 ms, session 10)
# but greedy decode 4% slower at batch 1 and 3% at batch 8, and the LoRA step 2% slower, so it applies from this
# batch on, to generation only.
WIDE_DECODE_BATCH = 64
WIDE_DECODE_OPTIONS = {"xla_gpu_experimental_force_split_k": 1}
_REFUSED_OPTIONS: set = set()  # option sets this XLA did not know (warned once, then left out)


def decode_compiler_options(batch: int, mesh: jax.sharding.Mesh) -> Optional[dict]:
    """The XLA compile options for generating `batch` rows on `mesh`: WIDE_DECODE_OPTIONS on a one-GPU mesh from
    WIDE_DECODE_BATCH rows on (the measured case), None (XLA's defaults) elsewhere."""
    if jax.default_backend() == "gpu" and mesh.size == 1 and batch >= WIDE_DECODE_BATCH and WIDE_DECODE_OPTIONS:
        return dict(WIDE_DECODE_OPTIONS)
    return None


_STATIC = ("apply_fn", "config", "max_new_tokens", "sampling", "stop_token_ids", "pad_token_id", "rules")


def _generate_body(params, input_ids, attention_mask, inputs_embeds, rng, *, apply_fn, config, max_new_tokens, sampling,
              stop_token_ids, pad_token_id, rules):
    with rules_lib.axis_rules(rules):
        ref = input_ids if inputs_embeds is None else inputs_embeds
        batch, prompt_len = ref.shape[:2]
        cache = KVCache.zeros(config, batch, prompt_len + max_new_tokens, jnp.dtype(config.dtype))
        out = apply_fn(params, input_ids, attention_mask, None, inputs_embeds, cache)
        stops = jnp.asarray(stop_token_ids or (-1,), jnp.int32)

        def choose(i, logits, done, tokens, rng):  # token i of every row from the logits that predict it
            rng, key = jax.random.split(rng)
            tok = jnp.where(done, pad_token_id, sample(logits, key, sampling))
            return tok, done | jnp.isin(tok, stops), tokens.at[:, i].set(tok), rng

        def body(state):
            i, cache, logits, done, tokens, rng = state
            tok, done, tokens, rng = choose(i, logits, done, tokens, rng)
            step = apply_fn(params, tok[:, None], jnp.ones((batch, 1), bool), None, None, cache)
            return i + 1, step.cache, step.logits[:, -1], done, tokens, rng

        # The loop runs the model after each token but the last: token max_new_tokens - 1 needs no forward after it.
        tokens = jnp.full((batch, max_new_tokens), pad_token_id, jnp.int32)
        state = (jnp.zeros((), jnp.int32), out.cache, out.logits[:, -1], jnp.zeros((batch,), bool), tokens, rng)
        # With stop tokens the loop ends once every row has stopped (the GPU hands that predicate to the host every
        # step); without them no row can stop early, and the counter alone gives a loop of known length, which XLA
        # runs without reading a predicate back.
        if stop_token_ids:
            cond = lambda s: (s[0] < max_new_tokens - 1) & ~jnp.all(s[3])  # noqa: E731
        else:
            cond = lambda s: s[0] < max_new_tokens - 1  # noqa: E731
        state = jax.lax.while_loop(cond, body, state)
        i, _, logits, done, tokens, rng = state
        tokens = choose(i, logits, done, tokens, rng)[2]  # all rows done: writes pad where pad already is
    is_stop = jnp.isin(tokens, stops)
    first_stop = jnp.where(jnp.any(is_stop, axis=1), jnp.argmax(is_stop, axis=1) + 1, max_new_tokens)
    return GenerationOutput(tokens=tokens, lengths=first_stop.astype(jnp.int32))


_generate = jax.jit(_generate_body, static_argnames=_STATIC)


@functools.lru_cache(maxsize=None)
def _generate_with(options: tuple) -> Callable:
    """`_generate` compiled with these XLA options ((name, value) pairs); one jitted function per option set."""
    return jax.jit(_generate_body, static_argnames=_STATIC, compiler_options=dict(options))


def generate(
    config: DecoderConfig,
    params: Any,
    input_ids: Optional[Any] = None,
    attention_mask: Optional[Any] = None,
    *,
    inputs_embeds: Optional[Any] = None,
    max_new_tokens: int = 32,
    sampling: SamplingConfig = SamplingConfig(),
    stop_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    rng: Optional[jax.Array] = None,
    apply_fn: Optional[Callable] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    rules=rules_lib.DEFAULT_RULES,
) -> GenerationOutput:
    """Generate up to `max_new_tokens` for left-padded prompts (ids or embeddings). Compiles once per shape."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds to generate().")
    if not sampling.greedy and rng is None:
        raise ValueError("Sampling with temperature > 0 needs an explicit PRNG key: pass rng=jax.random.key(seed).")
    ref = input_ids if inputs_embeds is None else inputs_embeds
    if attention_mask is not None and (not isinstance(attention_mask, jax.Array)
                                       or attention_mask.is_fully_addressable):
        mask = np.asarray(attention_mask)
        if mask.shape[1] and not mask[:, -1].all():
            raise ValueError("generate() expects left-padded prompts: the last column of attention_mask must be all "
                             "ones (set tokenizer.padding_side = 'left').")
    if attention_mask is None:
        attention_mask = jnp.ones(ref.shape[:2], bool)
    rng = jax.random.key(0) if rng is None else rng
    mesh = mesh or rules_lib.single_device_mesh()
    options = decode_compiler_options(ref.shape[0], mesh)
    key = tuple(sorted(options.items())) if options else None
    args = (params, None if input_ids is None else jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, bool),
            inputs_embeds, rng)
    kwargs = dict(apply_fn=apply_fn or decoder_apply(config), config=config, max_new_tokens=max_new_tokens,
                  sampling=sampling, stop_token_ids=tuple(int(t) for t in stop_token_ids),
                  pad_token_id=int(pad_token_id), rules=rules)
    with jax.set_mesh(mesh):
        if key is not None and key not in _REFUSED_OPTIONS:
            try:
                return _generate_with(key)(*args, **kwargs)
            except jax.errors.JaxRuntimeError as e:  # raised by the compile, before any work is done
                if "No such compile option" not in str(e):
                    raise
                _REFUSED_OPTIONS.add(key)
                warnings.warn(f"This XLA does not know the compile option(s) {sorted(options)}; generating with "
                              f"XLA's defaults instead (set latentjax.inference.generate.WIDE_DECODE_OPTIONS = {{}} "
                              f"to skip them).", stacklevel=2)
        return _generate(*args, **kwargs)


def generate_text(model, prompts: Sequence[str], *, chat: bool = True, max_new_tokens: int = 64,
                  sampling: SamplingConfig = SamplingConfig(), rng: Optional[jax.Array] = None,
                  system: Optional[str] = None) -> list[str]:
    """Tokenize (with the model's chat template when `chat`), generate, and decode replies."""
    tok = model.tokenizer
    if chat:
        texts = []
        for p in prompts:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
            texts.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        enc = tok(texts, return_tensors="np", padding=True, add_special_tokens=False)
    else:
        enc = tok(list(prompts), return_tensors="np", padding=True)
    stops = set(model.config.eos_token_ids)
    if tok.eos_token_id is not None:
        stops.add(tok.eos_token_id)
    out = generate(model.config, model.params, enc["input_ids"], enc["attention_mask"],
                   max_new_tokens=max_new_tokens, sampling=sampling, stop_token_ids=sorted(stops),
                   pad_token_id=tok.pad_token_id, rng=rng, mesh=model.mesh, rules=model.rules)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    return [tok.decode(t[:n], skip_special_tokens=True) for t, n in zip(tokens, lengths)]
