"""Sharding on 8 host devices: parameter placement, sliced loading, forward, train step and generation equal to
the unsharded model. `test_sharding.py` runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8; in a 1-device pytest process it skips."""
from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import flax.linen as nn
import optax

import latentjax
from latentjax.models import loading
from latentjax.models.model import abstract_params
from latentjax.parallel import mesh as mesh_lib
from latentjax.parallel import rules as rules_lib

MESHES = {"data8": {"data": 8}, "fsdp4_tensor2": {"fsdp": 4, "tensor": 2},
          "data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2}}
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def eight_devices():
    if jax.device_count() != 8:  # checked at run time, so collecting this file does not start a backend
        pytest.skip("needs 8 devices (test_sharding.py runs this file in a subprocess with 8)")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from latentjax.testing import save_tiny_hf_model

    # vocab 336 and the default sizes (hidden 72, mlp 136, 6 heads, 2 KV heads) divide every mesh above.
    return save_tiny_hf_model(str(tmp_path_factory.mktemp("tiny")), vocab_size=336)


@pytest.fixture(scope="module")
def reference(tiny_path):
    return latentjax.from_pretrained(tiny_path)  # one device, nothing sharded


@pytest.fixture(scope="module")
def batch():
    rs = np.random.RandomState(0)
    ids = rs.randint(3, 336, (8, 12)).astype(np.int32)
    mask = np.ones_like(ids, dtype=bool)
    mask[1::2, :4] = False  # left padding on half the rows
    return {"input_ids": ids, "attention_mask": mask}


_models = {}


def sharded(tiny_path, name):
    if name not in _models:
        mesh, rules = mesh_lib.mesh_from_config({"shape": MESHES[name]})
        _models[name] = latentjax.from_pretrained(tiny_path, mesh=mesh, rules=rules)
    return _models[name]


def host(x):
    return jax.tree.map(np.asarray, x)


@pytest.mark.parametrize("name", MESHES)
def test_param_shardings_follow_logical_names(tiny_path, reference, name):
    model = sharded(tiny_path, name)
    names = rules_lib.logical_axes_of(abstract_params(model.config))
    flat_names = dict(jax.tree_util.tree_leaves_with_path(names, is_leaf=lambda x: isinstance(x, P)))
    for path, param in jax.tree_util.tree_leaves_with_path(model.params):
        want = rules_lib.logical_spec(tuple(flat_names[path]), model.rules)
        assert param.sharding.mesh == model.mesh and param.sharding.spec == want, jax.tree_util.keystr(path)
    p = model.params
    assert p["layers"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert p["layers"]["self_attn"]["k_proj"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert p["layers"]["self_attn"]["o_proj"]["kernel"].sharding.spec == P(None, "tensor", "fsdp")
    assert p["layers"]["mlp"]["down_proj"]["kernel"].sharding.spec == P(None, "tensor", "fsdp")
    assert p["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    assert p["lm_head"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert p["norm"]["scale"].sharding.spec == P(None)
    if name == "fsdp4_tensor2":  # each device holds 1/8 of a 2-D sharded matrix
        q = p["layers"]["self_attn"]["q_proj"]["kernel"]
        assert {s.data.shape for s in q.addressable_shards} == {(3, 72 // 4, 72 // 2)}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), model.params,
                 reference.params)


def test_loader_reads_only_each_devices_slice(tiny_path, monkeypatch):
    """Every safetensors read during a fsdp=4 x tensor=2 load is the block of one device, never a whole matrix
    (unless the parameter is replicated)."""
    reads = []
    original = loading._Reader.slice

    class Recording:
        def __init__(self, inner, key):
            self.inner, self.key = inner, key

        def get_shape(self):
            return self.inner.get_shape()

        def __getitem__(self, idx):
            out = self.inner[idx]
            reads.append((self.key, tuple(self.inner.get_shape()), out.shape))
            return out

    monkeypatch.setattr(loading._Reader, "slice", lambda self, key: Recording(original(self, key), key))
    mesh, rules = mesh_lib.mesh_from_config({"shape": MESHES["fsdp4_tensor2"]})
    latentjax.from_pretrained(tiny_path, mesh=mesh, rules=rules)
    by_key = {}
    for key, full, got in reads:
        by_key.setdefault(key, set()).add((full, got))
    # HF q_proj is [out=heads*hd, in=embed]: out split by tensor (2), in by fsdp (4).
    assert by_key["model.layers.0.self_attn.q_proj.weight"] == {((72, 72), (36, 18))}
    assert by_key["model.layers.2.mlp.down_proj.weight"] == {((72, 136), (18, 68))}
    assert by_key["model.embed_tokens.weight"] == {((336, 72), (168, 18))}
    assert by_key["lm_head.weight"] == {((336, 72), (168, 18))}
    assert by_key["model.norm.weight"] == {((72,), (72,))}  # replicated: whole (tiny) vector
    big = [k for k, full, got in reads if len(full) == 2 and full == got]
    assert not big, f"whole matrices read: {big[:3]}"
    counts = {k: sum(r[0] == k for r in reads) for k in by_key}
    replicated = {k for k in by_key if "norm" in k}  # JAX reads a fully replicated array once
    assert all(counts[k] == (1 if k in replicated else 8) for k in by_key), counts  # one read per device


@pytest.mark.parametrize("name", MESHES)
def test_forward_matches_unsharded(tiny_path, reference, batch, name):
    model = sharded(tiny_path, name)
    want = np.asarray(reference(batch["input_ids"], batch["attention_mask"]))
    got = model(batch["input_ids"], batch["attention_mask"])
    assert got.sharding.mesh == model.mesh
    np.testing.assert_allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("name", ["fsdp4_tensor2", "data2_fsdp2_tensor2"])
def test_fused_projections_sharded_match_unsharded(tiny_path, reference, batch, name):
    """The fused q/k/v and gate/up kernels split over the tensor axis by whole kv groups and (gate, up) pairs."""
    mesh, rules = mesh_lib.mesh_from_config({"shape": MESHES[name]})
    model = latentjax.from_pretrained(tiny_path, mesh=mesh, rules=rules, scan_layers=False, fused_projections=True)
    qkv = model.params["layers_0"]["self_attn"]["qkv_proj"]["kernel"]
    assert qkv.sharding.spec == P("fsdp", "tensor")
    want = np.asarray(reference(batch["input_ids"], batch["attention_mask"]))
    np.testing.assert_allclose(np.asarray(model(batch["input_ids"], batch["attention_mask"])), want, **TOL)


def next_token_loss(logits, batch):
    logp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(logp, batch["input_ids"][:, 1:, None], axis=-1)[..., 0]
    w = batch["attention_mask"][:, 1:].astype(jnp.float32)
    return jnp.sum(nll * w) / jnp.sum(w)


def base_gradients(model, batch):
    """Loss and the gradient of every (frozen) base weight, jitted with stated shardings."""
    def loss_fn(params, batch):
        with rules_lib.axis_rules(model.rules):
            return next_token_loss(model.apply(params, batch["input_ids"], batch["attention_mask"]).logits, batch)

    param_sh = jax.tree.map(lambda x: x.sharding, model.params)
    batch_sh = {k: rules_lib.batch_sharding(model.mesh, 2, model.rules) for k in batch}
    fn = jax.jit(jax.value_and_grad(loss_fn), in_shardings=(param_sh, batch_sh),
                 out_shardings=(rules_lib.replicated(model.mesh), param_sh))
    with jax.set_mesh(model.mesh):
        return fn(model.params, batch)


@pytest.fixture(scope="module")
def reference_gradients(reference, batch):
    return host(base_gradients(reference, batch))


@pytest.mark.parametrize("name", MESHES)
def test_base_gradients_match_unsharded(tiny_path, reference_gradients, batch, name):
    model = sharded(tiny_path, name)
    loss, grads = base_gradients(model, batch)
    assert jax.tree.map(lambda g: g.sharding.spec, grads) == jax.tree.map(lambda p: p.sharding.spec, model.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), host((loss, grads)), reference_gradients)


def bridge_steps(model, batch, num_steps=2):
    """`latentjax.train.step.make_train_step` on a trainable projection (logical names bridge_in x bridge_mlp,
    SGD-momentum state) trained through the frozen, sharded decoder."""
    from latentjax.train import state as state_lib
    from latentjax.train.step import make_train_step

    mesh, rules, cfg = model.mesh, model.rules, model.config
    bridge = nn.Dense(cfg.hidden_size, use_bias=False,
                      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.05),
                                                               ("bridge_in", "bridge_mlp")))

    def init_trainable(rng):
        return bridge.init(rng, jnp.zeros((1, cfg.hidden_size)))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        emb = model.embed(frozen, batch["input_ids"])
        emb = emb + bridge.apply({"params": trainable}, emb)
        logits = model.apply(frozen, attention_mask=batch["attention_mask"], inputs_embeds=emb).logits
        return next_token_loss(logits, batch), {}

    optimizer = optax.sgd(0.1, momentum=0.9)
    shardings = state_lib.state_shardings(init_trainable, optimizer, mesh, rules)
    state = state_lib.init_state(init_trainable, optimizer, 0, shardings, mesh, rules)
    step = make_train_step(loss_fn, optimizer, mesh, rules, shardings, donate=False)
    losses = []
    for _ in range(num_steps):
        state, metrics = step(state, model.params, batch)
        losses.append(metrics["loss"])
    return state, losses


@pytest.fixture(scope="module")
def reference_bridge(reference, batch):
    return host(bridge_steps(reference, batch))


@pytest.mark.parametrize("name", MESHES)
def test_train_step_matches_unsharded(tiny_path, reference_bridge, batch, name):
    model = sharded(tiny_path, name)
    state, losses = bridge_steps(model, batch)
    kernel = state.params["kernel"]
    assert kernel.sharding.spec == P("fsdp", "tensor") and kernel.sharding.mesh == model.mesh
    assert state.opt_state[0].trace["kernel"].sharding == kernel.sharding  # momentum follows its parameter
    got = host((state, losses))
    assert float(got[1][1]) < float(got[1][0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, reference_bridge)


def test_generation_matches_unsharded(tiny_path, reference, batch):
    gen = pytest.importorskip("latentjax.inference.generate")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ids = np.where(mask, ids, 0)
    want = gen.generate(reference.config, reference.params, ids, mask, max_new_tokens=4)
    model = sharded(tiny_path, "data2_fsdp2_tensor2")
    got = gen.generate(model.config, model.params, ids, mask, max_new_tokens=4, mesh=model.mesh, rules=model.rules)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))


def test_mesh_errors_come_before_loading(tiny_path, tmp_path):
    # A folder with config.json only: a mesh error must be raised before any weight is looked for.
    shutil.copy(os.path.join(tiny_path, "config.json"), tmp_path / "config.json")
    with pytest.raises(mesh_lib.MeshError, match="does not divide the 8 devices"):
        mesh_lib.mesh_from_config({"shape": {"data": 3, "fsdp": -1}})
    with pytest.raises(mesh_lib.MeshError, match="uses 4 devices but 8 are present"):
        mesh_lib.make_mesh((2, 2, 1))
    six = jax.make_mesh((1, 2, 3), rules_lib.MESH_AXES, devices=jax.devices()[:6], axis_types=rules_lib.AUTO_AXES)
    with pytest.raises(mesh_lib.MeshError, match=r"num_key_value_heads=2 \('kv_heads'\) cannot be split over mesh "
                                                  r"axes tensor=3"):
        latentjax.from_pretrained(str(tmp_path), mesh=six)
    four = mesh_lib.make_mesh({"fsdp": 2, "tensor": 4})
    with pytest.raises(mesh_lib.MeshError, match=r"num_attention_heads=6 \('heads'\)"):
        latentjax.from_pretrained(str(tmp_path), mesh=four)
    # Replicating the KV projections (a rules override) makes tensor=3 acceptable for the KV heads; the next
    # dimension that does not divide is reported instead.
    _, rules = mesh_lib.mesh_from_config({"shape": {"data": -1}, "rules": {"kv_heads": None, "act_kv_heads": None}})
    with pytest.raises(mesh_lib.MeshError, match="intermediate_size=136"):
        latentjax.from_pretrained(str(tmp_path), mesh=six, rules=rules)
