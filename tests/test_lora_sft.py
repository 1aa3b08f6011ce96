"""LoRA SFT: loss on completion tokens only (golden values), example encoding, bucketed batches, the builder."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentjax.lora import LoraConfig, init_lora, lora_apply
from latentjax.lora import sft
from latentjax.models.config import DecoderConfig
from latentjax.models.model import init_params
from latentjax.parallel import rules as rules_lib
from latentjax.train.experiment import Experiment

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def char_tokenizer():
    """A character-level tokenizer with BOS/EOS and a ChatML template (101 tokens), made offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHATML
    return fast


def test_token_losses_golden():
    """Two rows, vocabulary 3. Row 0: ids [0 1 2 1], prompt = first two tokens -> targets are positions 2 and 3,
    predicted by logits[1] = [0, 0, ln 3] (p(2) = 3/5) and logits[2] = [0, 0, 0] (p(1) = 1/3). Row 1: ids
    [0 2 | pad pad], target position 1 predicted by logits[0] = [ln 2, 0, 0] (p(2) = 1/4). Every other logit row
    is garbage that must not count. Mean = (ln(5/3) + ln 3 + ln 4) / 3 = 0.9985774."""
    junk = [50.0, -50.0, 50.0]
    logits = jnp.asarray([
        [junk, [0.0, 0.0, math.log(3.0)], [0.0, 0.0, 0.0], junk],
        [[math.log(2.0), 0.0, 0.0], junk, junk, junk],
    ])
    ids = jnp.asarray([[0, 1, 2, 1], [0, 2, 0, 0]])
    loss_mask = jnp.asarray([[0, 0, 1, 1], [0, 1, 1, 1]], bool)  # row 1's padding flagged on purpose
    attn = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    total, count, correct = sft.token_losses(logits, ids, loss_mask, attn)
    assert float(count) == 3.0
    assert float(total / count) == pytest.approx(0.9985774, abs=1e-6)
    assert float(total / count) == pytest.approx((math.log(5 / 3) + math.log(3) + math.log(4)) / 3, rel=1e-6)
    assert float(correct) == 1.0  # only row 0's first target is the argmax


def test_loss_fn_masks_prompt_through_the_model():
    cfg = DecoderConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=8)
    lcfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    base = init_params(cfg, jax.random.key(0))
    lora = rules_lib.unbox(init_lora(cfg, lcfg, jax.random.key(1)))
    lora = jax.tree.map(lambda x: x + 0.05, lora)
    ids = jnp.asarray(np.random.RandomState(0).randint(1, 61, (2, 10)))
    attn = jnp.asarray(np.arange(10)[None] < np.asarray([[10], [7]]))
    loss_mask = jnp.asarray(np.arange(10)[None] >= np.asarray([[6], [3]])) & attn
    batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}
    loss_fn = sft.make_loss_fn(cfg, lcfg)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(lora, base, batch, None)
    logp = jax.nn.log_softmax(lora_apply(cfg, base, lora, lcfg, ids, attn).logits)
    terms = [-logp[b, t - 1, ids[b, t]] for b, start, end in ((0, 6, 10), (1, 3, 7)) for t in range(start, end)]
    assert float(metrics["target_tokens"]) == 8.0
    assert float(loss) == pytest.approx(float(np.mean(terms)), rel=1e-5)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))
    # dropout on: needs and uses the rng
    drop_loss = jax.jit(sft.make_loss_fn(cfg, lcfg.replace(dropout=0.3)))
    l1, _ = drop_loss(lora, base, batch, jax.random.key(1))
    l2, _ = drop_loss(lora, base, batch, jax.random.key(2))
    assert float(l1) != float(l2)


def test_encode_example_chat_and_plain():
    tok = char_tokenizer()
    ex = sft.encode_example(tok, "2+2?", "4", chat=True)
    ids, mask = ex["input_ids"], ex["loss_mask"]
    assert tok.decode(ids[~mask]) == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(ids[mask]) == "4<|im_end|>\n"
    assert mask.tolist() == sorted(mask.tolist())  # prompt first, then target
    ex = sft.encode_example(tok, "2+2?", " 4", chat=False, prompt_template="User: {prompt}\nAssistant:")
    assert tok.decode(ex["input_ids"][~ex["loss_mask"]]) == "<s>User: 2+2?\nAssistant:"
    assert tok.decode(ex["input_ids"][ex["loss_mask"]]) == " 4</s>"
    whole = sft.encode_example(tok, "2+2?", "4", chat=True, completion_only=False)
    assert not whole["loss_mask"][0] and whole["loss_mask"][1:].all()
    full = sft.encode_example(tok, "2+2?", "four", chat=True)
    n_prompt = int((~full["loss_mask"]).sum())
    assert n_prompt == 23 and len(full["input_ids"]) == 29  # "four", <|im_end|>, "\n": 6 target tokens
    short = sft.encode_example(tok, "2+2?", "four", chat=True, max_length=26)
    np.testing.assert_array_equal(short["input_ids"], full["input_ids"][:26])
    assert short["loss_mask"].sum() == 3
    assert sft.encode_example(tok, "2+2?", "four", chat=True, max_length=23) is None


def test_bucketed_batches():
    rng = np.random.RandomState(0)
    examples = [{"input_ids": np.full(n, i + 1, np.int32), "loss_mask": np.ones(n, bool)}  # row i is all i+1
                for i, n in enumerate(rng.randint(3, 60, 50))]
    buckets = sft.default_buckets(64, smallest=16)
    assert buckets == (16, 32, 64)
    it = sft.BucketedBatches(examples, 4, buckets, seed=7)
    seen = []
    for _ in range(it.steps_per_epoch):
        b = next(it)
        length = b["input_ids"].shape[1]
        assert b["input_ids"].shape == (4, length) and length in buckets
        n = b["attention_mask"].sum(1)
        assert (n <= length).all() and (n > (length // 2 if length > 16 else 0)).all()  # smallest bucket that fits
        seen += [int(r[0]) - 1 for r in b["input_ids"]]
        for r, k in zip(b["input_ids"], n):
            assert len(examples[int(r[0]) - 1]["input_ids"]) == k
        assert not b["loss_mask"][b["attention_mask"] == 0].any()
    assert len(seen) == len(set(seen)) > 50 - 3 * 4  # each example at most once; at most 3 per bucket left over
    assert it.get_state() == {"epoch": 0, "index": it.steps_per_epoch}
    next(it)
    assert it.get_state() == {"epoch": 1, "index": 1}
    state = it.get_state()
    after = [next(it) for _ in range(3)]
    again = sft.BucketedBatches(examples, 4, buckets, seed=7)
    again.set_state(state)
    for a, b in zip(after, [next(again) for _ in range(3)]):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    halves = [sft.BucketedBatches(examples, 4, buckets, seed=7, process_index=i, process_count=2) for i in (0, 1)]
    whole = sft.BucketedBatches(examples, 4, buckets, seed=7)
    for _ in range(5):
        h0, h1, w = next(halves[0]), next(halves[1]), next(whole)
        np.testing.assert_array_equal(np.concatenate([h0["input_ids"], h1["input_ids"]]), w["input_ids"])
    batches = sft.eval_batches(examples, 8, buckets)
    assert sum(int(b["attention_mask"].any(1).sum()) for b in batches) == 50


@pytest.fixture(scope="module")
def sft_model_dir(tmp_path_factory):
    from latentjax.testing import save_tiny_hf_model

    path = str(tmp_path_factory.mktemp("sft") / "model")
    save_tiny_hf_model(path, "llama", seed=1)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("scan_layers", [True, False])
def test_build_experiment_trains_and_evaluates(sft_model_dir, tmp_path, scan_layers):
    from latentjax.lora.experiment import build, default_config, lora_section, model_section

    rng = np.random.RandomState(0)
    rows = []
    for _ in range(40):
        a, b = rng.randint(0, 50, 2)
        rows.append({"question": f"{a}+{b}=?", "answer": f"{a + b}"})
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    config = default_config()
    config.model = model_section(sft_model_dir, dtype="float32", remat_policy="none", scan_layers=scan_layers)
    config.lora = lora_section(rank=4, alpha=8.0, targets="q,v,mlp.*")
    config.data.update(path=str(data), prompt_field="question", completion_field="answer", seq_len=64,
                       buckets=(32, 64), eval_batch_size=4, eval_fraction=0.1)
    config.train.batch_size = 4
    mesh = rules_lib.single_device_mesh()
    exp = build(config, mesh)
    assert isinstance(exp, Experiment)
    assert exp.batch_axes["input_ids"] == ("batch", "length")
    assert exp.fingerprint["targets"] == ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    boxed = exp.init_trainable(jax.random.key(0))
    trainable = rules_lib.unbox(boxed)
    assert set(trainable["layers"]) == {"self_attn", "mlp"}  # the adapter is stacked for either base layout
    assert ("layers" in exp.frozen) == scan_layers

    first = exp.eval_fn(trainable, 0)
    assert first["tokens"] > 0 and np.isfinite(first["loss"])
    batch = next(exp.train_data)
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] in (32, 64)
    opt = optax.adam(3e-2)
    state = opt.init(trainable)

    @jax.jit
    def step(params, state, batch, rng):
        (loss, metrics), grads = jax.value_and_grad(exp.loss_fn, has_aux=True)(params, exp.frozen, batch, rng)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    with jax.set_mesh(mesh):
        for i in range(10):
            trainable, state, loss = step(trainable, state, batch, jax.random.key(i))
            losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5  # fitting one batch (a random tiny base learns slowly: 5.65 -> 4.80)
    later = exp.eval_fn(trainable, 8)
    assert later["tokens"] == first["tokens"] and later["loss"] != first["loss"]


def test_fused_base_gives_the_experiment_the_same_loss_and_gradients(sft_model_dir, tmp_path):
    """`--config.model.fused_projections=True` loads the base with one q/k/v and one gate/up matmul per layer; the
    experiment's loss and adapter gradients equal the separate base's (the adapter format is the same)."""
    from latentjax.lora.experiment import build, default_config, lora_section, model_section

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"{a}+{a}=?", "answer": f"{2 * a}"}) for a in range(12)))
    mesh = rules_lib.single_device_mesh()
    runs = []
    for fused in (False, True):
        config = default_config()
        config.model = model_section(sft_model_dir, dtype="float32", remat_policy="none", scan_layers=False,
                                     fused_projections=fused)
        config.lora = lora_section(rank=4, alpha=8.0, targets="q,k,v,mlp.*")
        config.data.update(path=str(data), prompt_field="question", completion_field="answer", seq_len=32,
                           buckets=(32,), eval_fraction=0.0)
        config.train.batch_size = 4
        exp = build(config, mesh)
        assert ("qkv_proj" in exp.frozen["layers_0"]["self_attn"]) == fused
        trainable = jax.tree.map(lambda x: x + 0.05, rules_lib.unbox(exp.init_trainable(jax.random.key(0))))
        with jax.set_mesh(mesh):
            runs.append(jax.jit(jax.value_and_grad(exp.loss_fn, has_aux=True))(trainable, exp.frozen,
                                                                               next(exp.train_data), None))
    (loss_sep, _), grads_sep = runs[0]
    (loss_fused, _), grads_fused = runs[1]
    np.testing.assert_allclose(float(loss_fused), float(loss_sep), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(grads_sep), jax.tree.leaves(grads_fused)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(x))))


def test_lora_sft_through_the_training_loop_then_peft(sft_model_dir, tmp_path):
    """The registry entry and the shared loop run the experiment; the trained adapter exports to PEFT and gives
    PEFT the same logits."""
    loop = pytest.importorskip("latentjax.train.loop")
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from latentjax.lora import export_peft, lora_apply
    from latentjax.lora.experiment import data_section, lora_config_from, lora_section, model_section
    from latentjax.models.model import from_pretrained
    from latentjax.train import registry

    base_cfg = pytest.importorskip("configs.base")
    rows = [{"prompt": f"{a}*2=?", "completion": f"{2 * a}"} for a in range(24)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    config = base_cfg.get_config()
    config.experiment = "lora_sft"
    config.model = model_section(sft_model_dir, dtype="float32", remat_policy="none")
    config.lora = lora_section(rank=4, alpha=8.0, dropout=0.1, targets="q,k,v,o")
    config.data = data_section(path=str(data), seq_len=32)
    config.data.update(buckets=(32,), eval_fraction=0.25, eval_batch_size=2)
    config.train = base_cfg.train(steps=3, batch_size=2, compute_dtype="")
    config.optimizer = base_cfg.optimizer(lr=1e-2, warmup_steps=0, decay="constant")
    config.checkpoint = base_cfg.checkpoint(every=3, keep_last=1, keep_best=0, best_metric="")
    config.eval_every = 3
    config.eval_at_start = True
    config.logging.update(log_every=1, progress_bar=False, tensorboard=False)
    mesh = rules_lib.single_device_mesh()
    exp = registry.get("lora_sft")(config, mesh)
    result = loop.train(config, exp, mesh, str(tmp_path / "run"))
    assert result.step == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/loss" in x for x in lines) and any("train/loss" in x for x in lines)
    evals = {x["step"]: x["eval/loss"] for x in lines if "eval/loss" in x}
    assert sorted(evals) == [0, 3] and evals[3] != evals[0]  # the untrained start of the held-out curve, then step 3

    lora_cfg = lora_config_from(config)
    trained = jax.device_get(result.state.params)
    assert float(np.abs(trained["layers"]["self_attn"]["q_proj"]["lora_B"]).max()) > 0
    model = from_pretrained(sft_model_dir, dtype="float32")
    export_peft(str(tmp_path / "adapter"), trained, lora_cfg, model.config, base_model_name_or_path=sft_model_dir)
    ids = np.random.RandomState(0).randint(3, 100, (1, 20))
    ours = lora_apply(model.config, model.params, trained, lora_cfg, jnp.asarray(ids)).logits
    hf = AutoModelForCausalLM.from_pretrained(sft_model_dir, dtype=torch.float32)
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(hf, str(tmp_path / "adapter"))(torch.tensor(ids)).logits.numpy()
    assert float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max()) < 1e-4
