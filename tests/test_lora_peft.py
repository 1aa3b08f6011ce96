"""LoRA adapters against PEFT in PyTorch: exported adapters load in PEFT with the same logits; PEFT adapters
round-trip through latentjax unchanged."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.lora import (LoraConfig, export_peft, import_peft, init_lora, lora_apply, merged_model,
                            read_peft_config)
from latentjax.lora.peft import PeftFormatError
from latentjax.models.model import from_pretrained
from latentjax.parallel import rules as rules_lib
from latentjax.testing import save_tiny_hf_model

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

# Tiny random bases from tests/conftest.py (llama31: llama3 RoPE + GQA; mistral_window: sliding window;
# llama2_tied: tied embeddings, MHA), plus the real SmolLM2-135M-Instruct weights (slow; skipped when the
# offline copy is unavailable).
BASES = ["llama31", "mistral_window", "llama2_tied", pytest.param("smollm2", marks=pytest.mark.slow)]


@pytest.fixture
def base_dir(request, tiny_dirs):
    def get(name):
        return request.getfixturevalue("smollm2_dir") if name == "smollm2" else tiny_dirs[name]

    return get


def random_adapter(model_config, lora_cfg, seed=0, scale=0.05):
    """Nonzero A and B (an untrained adapter would hide layout errors)."""
    params = rules_lib.unbox(init_lora(model_config, lora_cfg, jax.random.key(seed)))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("lora_cfg", [
    LoraConfig(rank=4, alpha=8.0, targets="all"),
    LoraConfig(rank=3, alpha=5.0, targets=("q", "v_proj", "mlp.down_proj"), use_rslora=True),
], ids=["all-r4", "qvdown-rslora-r3"])
def test_export_loads_in_peft_with_same_logits(base, lora_cfg, base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base == "smollm2" and lora_cfg.use_rslora:
        pytest.skip("one adapter is enough on the real weights")
    path = base_dir(base)
    model = from_pretrained(path, dtype="float32")
    lora = random_adapter(model.config, lora_cfg)
    ids = np.random.RandomState(0).randint(3, min(model.config.vocab_size, 300), (2, 67))
    ours = lora_apply(model.config, model.params, lora, lora_cfg, jnp.asarray(ids)).logits

    out_dir = export_peft(str(tmp_path / "adapter"), lora, lora_cfg, model.config, base_model_name_or_path=path)
    cfg = json.load(open(os.path.join(out_dir, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == lora_cfg.rank
    assert cfg["target_modules"] == list(lora_cfg.targets) and cfg["use_rslora"] == lora_cfg.use_rslora

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    plain = torch_logits(hf, ids)
    peft_model = PeftModel.from_pretrained(hf, out_dir)
    theirs = torch_logits(peft_model, ids)
    # PEFT silently ignores keys it does not recognise: make sure every adapter weight was loaded ...
    result = peft_model.load_adapter(out_dir, adapter_name="check")
    assert not result.missing_keys and not result.unexpected_keys
    # ... and that the adapter actually changes the output.
    assert rel_err(theirs, plain) > 1e-2
    assert rel_err(ours, theirs) < 1e-4
    assert rel_err(merged_model(model, lora, lora_cfg)(jnp.asarray(ids)), theirs) < 1e-4  # merged inference


def test_peft_roundtrip_identical(base_dir, tmp_path):
    """PEFT (PyTorch, random weights) -> import_peft -> export_peft gives the same tensors and config."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    path = base_dir("mistral_window")
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    pcfg = PeftLoraConfig(r=5, lora_alpha=7, lora_dropout=0.1, target_modules=["k_proj", "o_proj", "up_proj"],
                          task_type="CAUSAL_LM", use_rslora=True)
    pm = get_peft_model(hf, pcfg).eval()  # eval: no LoRA dropout
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p))
    src = str(tmp_path / "src")
    pm.save_pretrained(src)
    ids = np.random.RandomState(1).randint(3, 300, (1, 33))
    theirs = torch_logits(pm, ids)

    model = from_pretrained(path, dtype="float32")
    lora_cfg = read_peft_config(src)
    assert lora_cfg == LoraConfig(rank=5, alpha=7.0, dropout=0.1, targets=("k_proj", "o_proj", "up_proj"),
                                  use_rslora=True)
    lora = import_peft(src, model.config)
    assert lora["layers"]["self_attn"]["k_proj"]["lora_A"].shape == (3, 72, 5)
    assert lora["layers"]["mlp"]["up_proj"]["lora_B"].shape == (3, 5, 136)
    ours = lora_apply(model.config, model.params, lora, lora_cfg, jnp.asarray(ids)).logits
    assert rel_err(ours, theirs) < 1e-4

    dst = export_peft(str(tmp_path / "dst"), lora, lora_cfg, model.config,
                      base_model_name_or_path=pcfg.base_model_name_or_path)
    a, b = load_file(os.path.join(src, "adapter_model.safetensors")), load_file(os.path.join(dst,
                                                                                           "adapter_model.safetensors"))
    assert sorted(a) == sorted(b) and len(a) == 3 * 3 * 2
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        np.testing.assert_array_equal(a[k], b[k])
    ca, cb = (json.load(open(os.path.join(d, "adapter_config.json"))) for d in (src, dst))
    for key in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "use_rslora", "bias", "fan_in_fan_out",
                "base_model_name_or_path", "use_dora", "rank_pattern", "alpha_pattern", "layers_to_transform"):
        assert ca.get(key) == cb.get(key), key
    assert sorted(ca["target_modules"]) == sorted(cb["target_modules"])
    assert read_peft_config(dst) == lora_cfg


def test_import_refuses_wrong_prefix_and_unsupported_options(base_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = base_dir("llama31")
    model = from_pretrained(path, dtype="float32")
    cfg = LoraConfig(rank=2, alpha=4.0, targets=("q_proj",))
    good = export_peft(str(tmp_path / "good"), random_adapter(model.config, cfg), cfg, model.config)

    bad = tmp_path / "bad"
    bad.mkdir()
    tensors = load_file(os.path.join(good, "adapter_model.safetensors"))
    save_file({k.replace("base_model.model.", ""): v for k, v in tensors.items()},
              str(bad / "adapter_model.safetensors"))
    os.link(os.path.join(good, "adapter_config.json"), bad / "adapter_config.json")
    with pytest.raises(PeftFormatError, match="prefix"):
        import_peft(str(bad), model.config)

    dora = tmp_path / "dora"
    dora.mkdir()
    raw = json.load(open(os.path.join(good, "adapter_config.json")))
    json.dump({**raw, "use_dora": True}, open(dora / "adapter_config.json", "w"))
    with pytest.raises(PeftFormatError, match="use_dora"):
        read_peft_config(str(dora))

    deeper = save_tiny_hf_model(str(tmp_path / "deep"), "llama", num_hidden_layers=4)
    deep_model = from_pretrained(deeper, dtype="float32")
    with pytest.raises(PeftFormatError, match="lacks"):
        import_peft(good, deep_model.config)
