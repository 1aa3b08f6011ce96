"""LoRA core: targets, init, forward via the interceptor, merge, gradients, dropout, sharding names, generation."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from latentjax.inference.generate import generate
from latentjax.lora import (LoraConfig, LoraForward, abstract_lora, init_lora, lora_apply, lora_targets, merge,
                            resolve_targets)
from latentjax.lora.adapter import _dropout_keys
from latentjax.models.config import DecoderConfig
from latentjax.models.decoder import Decoder
from latentjax.models.model import abstract_params, init_params
from latentjax.parallel import rules as rules_lib

CFG = DecoderConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_layers=3, num_heads=4, num_kv_heads=2,
                    head_dim=12, sliding_window=None)
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def base():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def ids():
    return jnp.asarray(np.random.RandomState(0).randint(0, CFG.vocab_size, (2, 19)))


def nonzero_adapter(cfg: LoraConfig, seed=1, scale=0.05):
    params = rules_lib.unbox(init_lora(CFG, cfg, jax.random.key(seed)))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def assert_same_logits(ours, base):
    """Bit-identical on the CPU; on GPUs a different fusion of the same math moves float32 logits by ~1e-5."""
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(ours, base)
    else:
        assert float(jnp.max(jnp.abs(ours - base)) / jnp.max(jnp.abs(base))) < 1e-4


def plain(params, ids, **kw):
    return Decoder(CFG).apply({"params": params}, ids, **kw).logits


def test_resolve_targets():
    assert resolve_targets("all") == ALL
    assert resolve_targets(["all-linear"]) == ALL
    assert resolve_targets(["v", "q"]) == ("q_proj", "v_proj")
    assert resolve_targets("q_proj,o_proj") == ("q_proj", "o_proj")
    assert resolve_targets(["mlp.*"]) == ("gate_proj", "up_proj", "down_proj")
    assert resolve_targets(["self_attn.*", "down_proj"]) == ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    assert LoraConfig(targets=["*_proj"]).targets == ALL
    with pytest.raises(ValueError, match="matches no projection"):
        resolve_targets(["lm_head"])
    assert LoraConfig(rank=16, alpha=32).scale == 2.0
    assert LoraConfig(rank=16, alpha=32, use_rslora=True).scale == 8.0
    assert hash(LoraConfig(targets="q,v")) == hash(LoraConfig(targets=("v_proj", "q_proj")))


def test_init_like_peft_and_untrained_adapter_is_identity(base, ids):
    cfg = LoraConfig(rank=6, alpha=12.0, targets="all")
    lora = rules_lib.unbox(init_lora(CFG, cfg, jax.random.key(3)))
    assert lora_targets(lora) == ALL
    a = lora["layers"]["mlp"]["down_proj"]["lora_A"]
    assert a.shape == (3, 80, 6) and a.dtype == jnp.float32
    bound = 1 / math.sqrt(80)  # kaiming_uniform(a=sqrt(5)) on PEFT's [r, in] weight: U(-1/sqrt(in), 1/sqrt(in))
    assert float(jnp.max(jnp.abs(a))) <= bound and float(jnp.max(jnp.abs(a))) > 0.9 * bound
    assert abs(float(jnp.std(a)) - bound / math.sqrt(3)) < 0.1 * bound
    assert not np.allclose(a[0], a[1])  # layers differ
    for block in lora["layers"].values():
        for ab in block.values():
            assert not np.any(np.asarray(ab["lora_B"]))
    assert_same_logits(lora_apply(CFG, base, lora, cfg, ids).logits, plain(base, ids))


@pytest.mark.parametrize("targets", ["all", ("q_proj", "v_proj"), ("o_proj", "down_proj")])
def test_merge_matches_adapter_forward(base, ids, targets):
    cfg = LoraConfig(rank=4, alpha=8.0, targets=targets)
    lora = nonzero_adapter(cfg)
    with_adapter = lora_apply(CFG, base, lora, cfg, ids).logits
    merged = merge(base, lora, cfg)
    assert jax.tree.structure(merged) == jax.tree.structure(base)
    np.testing.assert_allclose(plain(merged, ids), with_adapter, rtol=0, atol=1e-5 * float(jnp.max(with_adapter)))
    assert float(jnp.max(jnp.abs(with_adapter - plain(base, ids)))) > 1e-3  # the adapter does something
    untouched = [p for p in ALL if p not in cfg.targets]
    for proj in untouched:
        block = "mlp" if proj in ("gate_proj", "up_proj", "down_proj") else "self_attn"
        assert merged["layers"][block][proj]["kernel"] is base["layers"][block][proj]["kernel"]


def test_only_lora_params_get_gradients(base, ids):
    cfg = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "up_proj"))

    def loss(lora):
        logits = lora_apply(CFG, base, lora, cfg, ids).logits
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    fresh = rules_lib.unbox(init_lora(CFG, cfg, jax.random.key(0)))
    grads = jax.grad(loss)(fresh)
    assert jax.tree.structure(grads) == jax.tree.structure(fresh)  # nothing of the base tree
    for block, proj in (("self_attn", "q_proj"), ("mlp", "up_proj")):
        g = grads["layers"][block][proj]
        assert float(jnp.max(jnp.abs(g["lora_B"]))) > 0  # B = 0 at init: only B moves first, as in PEFT
        assert float(jnp.max(jnp.abs(g["lora_A"]))) == 0
    grads = jax.grad(loss)(nonzero_adapter(cfg))
    for leaf in jax.tree.leaves(grads):
        assert float(jnp.min(jnp.max(jnp.abs(leaf), axis=(1, 2)))) > 0  # every layer of A and B


def test_logical_axes_and_tensor_sharded_specs():
    cfg = LoraConfig(rank=8, targets="all")
    boxed = abstract_lora(CFG, cfg)
    names = nn.get_partition_spec(boxed)["layers"]
    base_names = nn.get_partition_spec(abstract_params(CFG))["layers"]
    expected_io = {"q_proj": ("embed", "heads"), "k_proj": ("embed", "kv_heads"), "v_proj": ("embed", "kv_heads"),
                   "o_proj": ("heads", "embed"), "gate_proj": ("embed", "mlp"), "up_proj": ("embed", "mlp"),
                   "down_proj": ("mlp", "embed")}
    rules = rules_lib.rules_from_config({"embed": "fsdp"})  # fsdp + tensor sharded mesh rules
    for proj, (i, o) in expected_io.items():
        block = "mlp" if proj in ("gate_proj", "up_proj", "down_proj") else "self_attn"
        a, b = names[block][proj]["lora_A"], names[block][proj]["lora_B"]
        assert tuple(a) == ("layers", i, "lora_rank") and tuple(b) == ("layers", "lora_rank", o)
        kernel = base_names[block][proj]["kernel"]
        assert tuple(kernel) == ("layers", i, o)
        sa, sb, sk = (rules_lib.logical_spec(tuple(x), rules) for x in (a, b, kernel))
        assert sa[1] == sk[1] and sb[2] == sk[2] and sa[2] is None and sb[1] is None  # rank replicated
    spec = lambda proj, f: rules_lib.logical_spec(tuple(names["self_attn" if proj[0] in "qkvo" else "mlp"][proj][f]),
                                                  rules)
    assert spec("q_proj", "lora_A") == P(None, "fsdp", None) and spec("q_proj", "lora_B") == P(None, None, "tensor")
    assert spec("o_proj", "lora_A") == P(None, "tensor", None) and spec("o_proj", "lora_B") == P(None, None, "fsdp")
    assert spec("down_proj", "lora_A") == P(None, "tensor", None)
    shapes = jax.tree.map(lambda x: x.shape, rules_lib.unbox(boxed))
    assert shapes["layers"]["self_attn"]["k_proj"] == {"lora_A": (3, 48, 8), "lora_B": (3, 8, 24)}


def test_dropout(base, ids):
    cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.5, targets="all")
    lora = nonzero_adapter(cfg)
    det = lora_apply(CFG, base, lora, cfg, ids).logits
    np.testing.assert_array_equal(lora_apply(CFG, base, lora, cfg, ids, rng=jax.random.key(1)).logits, det)
    d1 = lora_apply(CFG, base, lora, cfg, ids, rng=jax.random.key(1), deterministic=False).logits
    d1b = lora_apply(CFG, base, lora, cfg, ids, rng=jax.random.key(1), deterministic=False).logits
    d2 = lora_apply(CFG, base, lora, cfg, ids, rng=jax.random.key(2), deterministic=False).logits
    np.testing.assert_array_equal(d1, d1b)
    assert float(jnp.max(jnp.abs(d1 - det))) > 1e-4 and float(jnp.max(jnp.abs(d1 - d2))) > 1e-4
    keys = _dropout_keys(lora, jax.random.key(0))["layers"]["self_attn"]["q_proj"]["key"]
    assert keys.shape[0] == 3 and len({tuple(np.asarray(k).ravel()) for k in keys}) == 3  # a key per layer
    with pytest.raises(ValueError, match="rng"):
        lora_apply(CFG, base, lora, cfg, ids, deterministic=False)
    # dropout does not touch the base path: with B = 0 the output is the base output whatever the mask
    fresh = rules_lib.unbox(init_lora(CFG, cfg, jax.random.key(0)))
    assert_same_logits(lora_apply(CFG, base, fresh, cfg, ids, rng=jax.random.key(1), deterministic=False).logits,
                       plain(base, ids))


def test_remat_bf16_and_jit(base, ids):
    cfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    lora = nonzero_adapter(cfg)
    ref = lora_apply(CFG, base, lora, cfg, ids).logits
    loss = lambda l, c: jnp.sum(lora_apply(c, base, l, cfg, ids).logits ** 2)
    g_ref = jax.grad(loss)(lora, CFG)
    for policy in ("minimal", "lean", "full"):
        g_remat = jax.jit(jax.grad(loss), static_argnums=1)(lora, CFG.replace(remat_policy=policy))
        for x, y in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_remat)):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-5 * float(jnp.max(jnp.abs(x))))
    bf = CFG.replace(dtype="bfloat16", param_dtype="bfloat16")
    base_bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), base)
    out = jax.jit(lambda b, l: lora_apply(bf, b, l, cfg, ids).logits)(base_bf, lora)
    assert out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * float(jnp.max(jnp.abs(ref)))


def test_generation_with_adapter_equals_merged(base):
    cfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    lora = nonzero_adapter(cfg, scale=0.2)
    prompt = np.random.RandomState(5).randint(1, CFG.vocab_size, (2, 7))
    mask = np.ones_like(prompt, bool)
    mask[0, :3] = False  # left padding
    fwd = LoraForward(CFG, cfg)
    assert hash(fwd) == hash(LoraForward(CFG, cfg))
    with_adapter = generate(CFG, {"base": base, "lora": lora}, prompt, mask, max_new_tokens=8, apply_fn=fwd)
    merged = generate(CFG, merge(base, lora, cfg), prompt, mask, max_new_tokens=8)
    without = generate(CFG, base, prompt, mask, max_new_tokens=8)
    np.testing.assert_array_equal(with_adapter.tokens, merged.tokens)
    assert not np.array_equal(with_adapter.tokens, without.tokens)


SHARDED_SCRIPT = textwrap.dedent("""
    import os, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from safetensors.numpy import load_file
    from latentjax.lora import LoraConfig, init_lora, lora_apply, lora_shardings, merge, export_peft
    from latentjax.models.config import DecoderConfig
    from latentjax.models.model import init_params
    from latentjax.parallel import rules as rules_lib
    from latentjax.parallel.mesh import make_mesh

    cfg = DecoderConfig(vocab_size=64, hidden_size=48, intermediate_size=80, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=12)
    lcfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    mesh = make_mesh((1, 2, 2))
    rules = rules_lib.DEFAULT_RULES
    base1 = init_params(cfg, jax.random.key(0))
    base = init_params(cfg, jax.random.key(0), mesh)
    sh = lora_shardings(cfg, lcfg, mesh)
    lora = jax.jit(lambda r: rules_lib.unbox(init_lora(cfg, lcfg, r)), out_shardings=sh)(jax.random.key(1))
    lora = jax.tree.map(lambda x: x + 0.05, lora)
    q = lora["layers"]["self_attn"]["q_proj"]
    assert q["lora_A"].sharding.spec == P(None, "fsdp", None), q["lora_A"].sharding.spec
    assert q["lora_B"].sharding.spec == P(None, None, "tensor"), q["lora_B"].sharding.spec
    assert len(q["lora_B"].addressable_shards) == 4 and q["lora_B"].addressable_shards[0].data.shape == (2, 4, 24)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 64, (4, 9)))

    def loss(l, b):
        with rules_lib.axis_rules(rules):
            return jnp.mean(lora_apply(cfg, b, l, lcfg, ids).logits ** 2)

    with jax.set_mesh(mesh):
        val, grads = jax.jit(jax.value_and_grad(loss))(lora, base)
        merged = jax.jit(lambda b, l: merge(b, l, lcfg))(base, lora)
    host = jax.device_get(lora)
    val1, grads1 = jax.value_and_grad(loss)(host, base1)
    assert abs(float(val) - float(val1)) < 1e-5 * abs(float(val1)), (val, val1)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    g = grads["layers"]["self_attn"]["q_proj"]["lora_B"]
    assert g.sharding.spec == P(None, None, "tensor"), g.sharding.spec
    k = merged["layers"]["mlp"]["down_proj"]["kernel"]
    assert k.sharding.spec == base["layers"]["mlp"]["down_proj"]["kernel"].sharding.spec
    d = tempfile.mkdtemp()
    export_peft(d + "/sharded", lora, lcfg, cfg)
    export_peft(d + "/host", host, lcfg, cfg)
    a, b = load_file(d + "/sharded/adapter_model.safetensors"), load_file(d + "/host/adapter_model.safetensors")
    assert sorted(a) == sorted(b) and len(a) == 2 * 7 * 2
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    print("SHARDED OK")
""")


def test_sharded_mesh_training_and_export():
    """4 CPU devices, mesh (data 1, fsdp 2, tensor 2): LoRA params shard like their base weights, the sharded
    loss/grad equal the single-device ones, merge keeps the base sharding, export gathers shards."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "SHARDED OK" in run.stdout, run.stdout[-3000:] + run.stderr[-5000:]


MULTIPROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from latentjax.parallel import distributed
    assert distributed.initialize_from_env() and jax.process_count() == 2
    from latentjax.lora import LoraConfig, export_peft, import_peft, init_lora, lora_shardings
    from latentjax.models.config import DecoderConfig
    from latentjax.parallel import rules as rules_lib
    from latentjax.parallel.mesh import make_mesh

    cfg = DecoderConfig(vocab_size=64, hidden_size=48, intermediate_size=80, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=12)
    lcfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    out = sys.argv[1]
    mesh = make_mesh((1, 2, 2))  # fsdp across the two processes, tensor inside each
    init = jax.jit(lambda r: jax.tree.map(lambda x: x + 0.05, rules_lib.unbox(init_lora(cfg, lcfg, r))),
                   out_shardings=lora_shardings(cfg, lcfg, mesh))
    lora = init(jax.random.key(1))
    a = lora["layers"]["mlp"]["up_proj"]["lora_A"]
    assert not a.is_fully_addressable and a.sharding.spec[1] == "fsdp"
    wrote = export_peft(out + "/multi", lora, lcfg, cfg)
    assert (wrote is not None) == (jax.process_index() == 0), wrote
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("exported")
    back = import_peft(out + "/multi", cfg, mesh=mesh)
    b = back["layers"]["mlp"]["up_proj"]["lora_A"]
    assert b.sharding.spec == a.sharding.spec and not b.is_fully_addressable
    export_peft(out + "/again", back, lcfg, cfg)
    print("MULTI OK", jax.process_index())
""")


def test_two_process_export_writes_once_and_gathers(tmp_path):
    """Two JAX processes (2 CPU devices each): adapter arrays that no process holds whole are gathered, written by
    process 0 only, equal to a one-process export, and import back onto the two-process mesh."""
    from safetensors.numpy import load_file

    from latentjax.lora import export_peft

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    launcher = os.path.join(repo, "launch", "local_multiprocess.py")
    if not os.path.exists(launcher):
        pytest.skip("launch/local_multiprocess.py is absent")
    script = tmp_path / "worker.py"
    script.write_text(MULTIPROCESS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTJAX_", "SLURM_"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")])), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, launcher, "-n", "2", "-d", "2", "--timeout", "240", "--", str(script),
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "MULTI OK 0" in log and "MULTI OK 1" in log, log[-5000:]

    cfg = DecoderConfig(vocab_size=64, hidden_size=48, intermediate_size=80, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=12)
    lcfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    lora = jax.tree.map(lambda x: x + 0.05, rules_lib.unbox(init_lora(cfg, lcfg, jax.random.key(1))))
    export_peft(str(tmp_path / "single"), lora, lcfg, cfg)
    want = load_file(str(tmp_path / "single" / "adapter_model.safetensors"))
    for name in ("multi", "again"):
        got = load_file(str(tmp_path / name / "adapter_model.safetensors"))
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_per_layer_base_gives_the_same_outputs_gradients_dropout_and_merge(base, ids):
    """A per-layer (unscanned) base with the same stacked adapter: same logits, gradients, dropout masks, merge."""
    from latentjax.models.model import unstack_layers

    cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.3, targets="all")
    flat_cfg, flat = unstack_layers(CFG, base)
    lora = nonzero_adapter(cfg)
    assert abstract_lora(flat_cfg, cfg)["layers"]["self_attn"]["q_proj"]["lora_A"].value.shape[0] == CFG.num_layers
    ref = lora_apply(CFG, base, lora, cfg, ids).logits
    np.testing.assert_allclose(lora_apply(flat_cfg, flat, lora, cfg, ids).logits, ref, rtol=1e-5, atol=1e-5)
    drop = dict(rng=jax.random.key(3), deterministic=False)
    np.testing.assert_allclose(lora_apply(flat_cfg, flat, lora, cfg, ids, **drop).logits,
                               lora_apply(CFG, base, lora, cfg, ids, **drop).logits, rtol=1e-5, atol=1e-5)
    loss = lambda l, c, b: jnp.sum(lora_apply(c, b, l, cfg, ids).logits ** 2)  # noqa: E731
    for x, y in zip(jax.tree.leaves(jax.grad(loss)(lora, CFG, base)), jax.tree.leaves(jax.grad(loss)(lora, flat_cfg, flat))):
        np.testing.assert_allclose(y, x, rtol=2e-4, atol=1e-5 * float(jnp.max(jnp.abs(x))))
    merged = merge(flat, lora, cfg)
    assert set(merged) == set(flat)
    np.testing.assert_allclose(Decoder(flat_cfg).apply({"params": merged}, ids).logits, ref, rtol=1e-5,
                               atol=1e-5 * float(jnp.max(jnp.abs(ref))))


def test_per_layer_gradient_is_one_concatenate_and_remat_survives_cse(base, ids):
    """The per-layer step's cost structure: the adapter's gradient is gathered back into the stacked layout by
    one concatenate (indexing would pad every layer's gradient to full size and sum them), and a per-layer
    remat carries an optimization barrier per layer (without it XLA's CSE merges the recomputation into the
    forward and the remat saves no memory: 31.2 vs 22.6 GiB on the 8B step)."""
    from latentjax.models.model import unstack_layers

    cfg = LoraConfig(rank=4, alpha=8.0, targets="all")
    flat_cfg, flat = unstack_layers(CFG, base)
    lora = nonzero_adapter(cfg)
    loss = lambda l, c: jnp.sum(lora_apply(c, flat, l, cfg, ids).logits ** 2)  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(lora, flat_cfg))
    stacked = {"f32[" + ",".join(map(str, x.shape)) + "] = " for x in jax.tree.leaves(lora)}
    assert not any(s + "pad" in jaxpr for s in stacked) and all(s + "concatenate" in jaxpr for s in stacked)
    for policy, barriers in (("none", 0), ("lean", CFG.num_layers)):
        hlo = jax.jit(jax.grad(loss), static_argnums=1).lower(lora, flat_cfg.replace(remat_policy=policy)).as_text()
        assert hlo.count("optimization_barrier") == barriers, policy


@pytest.mark.parametrize("layers,targets", [("scanned", "all"), ("per_layer", ("q_proj", "v_proj", "up_proj"))])
def test_fused_base_gives_the_same_outputs_gradients_dropout_and_merge(base, ids, layers, targets):
    """A base with one q/k/v and one gate/up Dense per layer (`fuse_projections`) and the same per-projection
    adapter: the adapter's deltas land in the fused Dense's columns of their projection (k left out of a subset
    adds zeros), so logits, dropout, gradients and the merge equal the separate base's."""
    from latentjax.models.model import fuse_projections, unstack_layers

    cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.3, targets=targets)
    lora = nonzero_adapter(cfg)
    sep_cfg, sep = (CFG, base) if layers == "scanned" else unstack_layers(CFG, base)
    fused_cfg, fused = fuse_projections(sep_cfg, sep)
    assert any("qkv_proj" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(fused)[0])
    assert jax.tree.map(jnp.shape, abstract_lora(fused_cfg, cfg)) == jax.tree.map(jnp.shape, abstract_lora(CFG, cfg))
    ref = lora_apply(sep_cfg, sep, lora, cfg, ids).logits
    assert float(jnp.max(jnp.abs(ref - plain(base, ids)))) > 1e-3  # the adapter changes the output
    np.testing.assert_allclose(lora_apply(fused_cfg, fused, lora, cfg, ids).logits, ref, rtol=1e-5, atol=1e-6)
    drop = dict(rng=jax.random.key(3), deterministic=False)
    np.testing.assert_allclose(lora_apply(fused_cfg, fused, lora, cfg, ids, **drop).logits,
                               lora_apply(sep_cfg, sep, lora, cfg, ids, **drop).logits, rtol=1e-5, atol=1e-6)
    loss = lambda l, c, b: jnp.sum(lora_apply(c, b, l, cfg, ids).logits ** 2)  # noqa: E731
    grads_sep, grads_fused = jax.grad(loss)(lora, sep_cfg, sep), jax.grad(loss)(lora, fused_cfg, fused)
    for x, y in zip(jax.tree.leaves(grads_sep), jax.tree.leaves(grads_fused)):
        assert float(jnp.max(jnp.abs(x))) > 0.0
        np.testing.assert_allclose(y, x, rtol=2e-4, atol=1e-5 * float(jnp.max(jnp.abs(x))))
    merged = merge(fused, lora, cfg, fused_cfg)
    np.testing.assert_allclose(Decoder(fused_cfg).apply({"params": merged}, ids).logits, ref, rtol=1e-5,
                               atol=1e-5 * float(jnp.max(jnp.abs(ref))))
    with pytest.raises(ValueError, match="model_config"):
        merge(fused, lora, cfg)
