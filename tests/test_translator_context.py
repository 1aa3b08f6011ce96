"""Training and evaluation give the target the same prefix: `[K soft tokens] + [context]`, the context built by
the one function `translator.data.target_context_ids` in both stages. For each mode (soft_plus_text and soft_only
under context "mode", soft_only under "reference"), on real GSM8K test items with the few-shot prefix off (so the
evaluation prompt is the training prompt), a training row (`data.Encode`) and the evaluator
(`translator.evaluate.Evaluator`) must agree on the source ids, the target's context ids, the prefix embeddings
(soft tokens + embedded context) and the target's next-token logits after the prefix (which also checks the
positions: training rows are right-padded, evaluation rows left-padded)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.bridge.forward import insert_soft_tokens
from latentjax.parallel import rules as rules_lib
from latentjax.parallel.mesh import make_mesh
from latentjax.train import config_tools, registry
from latentjax.translator import data as data_lib
from latentjax.translator.evaluate import Evaluator
from latentjax.translator.forward import shifted_apply, text_positions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4
CASES = [("soft_plus_text", "mode"), ("soft_only", "mode"), ("soft_only", "reference")]


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("translator_context")
    config = config_tools.load_config(os.path.join(ROOT, "configs", "translator", "tiny.py")
                                      + f":root={tmp / 'pair'},kind=cross,tokens={K}")
    config.data.path = data_dir
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    experiment = registry.get("translator")(config, mesh)
    variables = jax.jit(experiment.init_trainable)(jax.random.PRNGKey(3))
    # Non-zero gates, so the soft tokens depend on the source (a fresh cross translator ignores it).
    variables = jax.tree_util.tree_map(lambda x: x + 0.1 if x.ndim == 0 or x.shape == (1,) else x, variables)
    from transformers import AutoTokenizer

    s_tok = AutoTokenizer.from_pretrained(config.model.sender.path)
    r_tok = AutoTokenizer.from_pretrained(config.model.receiver.path)
    from latentjax.data.sources import load_split

    examples = data_lib.gsm8k_examples(load_split("gsm8k", "test", data_dir))[:3]
    return experiment, variables, mesh, s_tok, r_tok, examples


@pytest.mark.parametrize("mode,context", CASES)
def test_training_and_evaluation_prefixes_are_identical(built, mode, context):
    experiment, variables, mesh, s_tok, r_tok, examples = built
    model, frozen = experiment.loss_fn.__self__, experiment.frozen
    evaluator = Evaluator(model, examples, s_tok, r_tok, few_shot="", batch_size=len(examples),
                          sender_max_tokens=128, mesh=mesh, sender_few_shot=False, context=context)
    encode = data_lib.Encode(s_tok, r_tok, K, batch_size=len(examples), mode=mode, context=context,
                             sender_max_tokens=128)
    eval_ctx, eval_src = evaluator.context_ids(mode), evaluator.sender_ids()
    for i, ex in enumerate(examples):
        row = encode.map_with_index(i, ex)
        ids, loss = row["receiver_input_ids"], row["receiver_loss_mask"]
        start = int(np.argmax(loss))  # the first solution token
        assert list(ids[K:start]) == eval_ctx[i], (mode, context)
        assert list(row["sender_input_ids"]) == eval_src[i]
        text = r_tok.decode(eval_ctx[i], skip_special_tokens=True)
        if context == "reference":
            assert eval_ctx[i] == []
        elif mode == "soft_plus_text":
            assert ex["question"] in text and text.endswith(data_lib.FORMAT_LINE)
        else:
            assert ex["question"] not in text and text == data_lib.FORMAT_LINE

        # The same prefix as embeddings and as the target's next-token logits, training layout vs evaluation layout.
        src = jnp.asarray([row["sender_input_ids"]])
        src_mask = jnp.ones_like(src, dtype=bool)
        n = start  # K soft slots + context
        pad = 8 if n > K else 0  # evaluation left-pads the context (none to pad: none), training right-pads
        train_ids = jnp.asarray(np.concatenate([ids[:n], np.zeros(pad, np.int32)])[None])
        train_mask = jnp.asarray(np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])[None])
        ctx_ids = jnp.asarray(np.concatenate([np.zeros(pad, np.int32), ids[K:n]])[None])
        eval_mask = jnp.asarray(np.concatenate([np.ones(K, bool), np.zeros(pad, bool), np.ones(n - K, bool)])[None])

        @jax.jit
        def both(variables, frozen):
            soft = model.eval_soft_tokens(variables, frozen, src, src_mask, jax.random.PRNGKey(0))
            train = insert_soft_tokens(model.embed(frozen, train_ids), soft, jnp.zeros((1,), jnp.int32))
            train_logits = model.logits(frozen, train, train_mask, text_positions(train_mask, K, model.positions))
            prefix = model.prefix_embeds(variables, frozen, src, src_mask, ctx_ids, jax.random.PRNGKey(0))
            eval_logits = shifted_apply(model.receiver, K, model.positions, frozen["receiver"], None, eval_mask,
                                        None, prefix, None).logits
            return train, train_logits, prefix, eval_logits, soft

        with rules_lib.activate(mesh):
            train, train_logits, prefix, eval_logits, soft = both(variables, frozen)
        assert float(jnp.std(soft)) > 0
        np.testing.assert_array_equal(np.asarray(train[0, :n]), np.asarray(prefix[0][np.asarray(eval_mask[0])]))
        np.testing.assert_allclose(np.asarray(train_logits[0, n - 1]), np.asarray(eval_logits[0, -1]),
                                   rtol=1e-5, atol=1e-5)


def test_reference_context_is_refused_where_a_step_reads_text():
    with pytest.raises(ValueError, match="soft_only"):
        data_lib.check_context("reference", "soft_plus_text")
    with pytest.raises(ValueError, match="soft_only"):
        data_lib.check_context("reference", "soft_only", curriculum_steps=10)
    with pytest.raises(ValueError, match="train_context"):
        data_lib.check_context("none", "soft_only")
    assert data_lib.context_text("soft_only", "P", "reference") == ("", False)
    assert data_lib.context_text("soft_only", "P", "mode") == (data_lib.FORMAT_LINE, True)
