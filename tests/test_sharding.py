"""Meshes from config, the one rules table, distributed start-up from the environment (1 device, in process),
and the 8-device suite `test_sharding_mesh8.py` run in a subprocess."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from latentjax.models.config import DecoderConfig
from latentjax.parallel import distributed
from latentjax.parallel import mesh as mesh_lib
from latentjax.parallel import rules as rules_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = DecoderConfig(vocab_size=336, hidden_size=72, intermediate_size=136, num_layers=3, num_heads=6,
                     num_kv_heads=2, head_dim=12)


def test_resolve_shape():
    assert mesh_lib.resolve_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert mesh_lib.resolve_shape({"fsdp": 4, "tensor": 2}, 8) == (1, 4, 2)
    assert mesh_lib.resolve_shape({"data": -1, "tensor": 2}, 8) == (4, 1, 2)
    assert mesh_lib.resolve_shape([2, -1, 2], 16) == (2, 4, 2)
    with pytest.raises(mesh_lib.MeshError, match="more than one -1"):
        mesh_lib.resolve_shape((-1, -1, 1), 8)
    with pytest.raises(mesh_lib.MeshError, match="does not divide the 8 devices"):
        mesh_lib.resolve_shape((3, -1, 1), 8)
    with pytest.raises(mesh_lib.MeshError, match="uses 4 devices but 8 are present"):
        mesh_lib.resolve_shape((2, 2, 1), 8)
    with pytest.raises(mesh_lib.MeshError, match="Unknown mesh axis 'model'"):
        mesh_lib.resolve_shape({"model": 2}, 8)
    with pytest.raises(mesh_lib.MeshError, match="one size per axis"):
        mesh_lib.resolve_shape((8, 1), 8)


def test_split_over_hosts_gives_hosts_the_slow_axes():
    assert mesh_lib.split_over_hosts((4, 2, 1), 2) == ((2, 2, 1), (2, 1, 1))
    assert mesh_lib.split_over_hosts((1, 16, 1), 2) == ((1, 8, 1), (1, 2, 1))  # fsdp across hosts
    assert mesh_lib.split_over_hosts((2, 8, 2), 4) == ((1, 4, 2), (2, 2, 1))  # 4 nodes x 8 GPUs
    assert mesh_lib.split_over_hosts((1, 1, 8), 2) == ((1, 1, 4), (1, 1, 2))  # tensor must cross (warned)
    assert mesh_lib.split_over_hosts((8, 1, 1), 1) == ((8, 1, 1), (1, 1, 1))


def test_mesh_from_config_reads_shape_and_rules():
    cfg = ml_collections.ConfigDict({"shape": {"data": -1, "fsdp": 1}, "rules": {"embed": None,
                                                                               "batch": ["data", "fsdp"]}})
    mesh, rules = mesh_lib.mesh_from_config(cfg)
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    table = dict(rules)
    assert table["embed"] is None and table["batch"] == ("data", "fsdp") and table["heads"] == "tensor"
    assert len(rules) == len(rules_lib.DEFAULT_RULES)  # overrides replace entries of the one table
    assert mesh_lib.mesh_from_config(None).rules == rules_lib.DEFAULT_RULES
    assert mesh_lib.mesh_from_config({"shape": [1, 1, -1]}).mesh.shape["tensor"] == jax.device_count()
    with pytest.raises(mesh_lib.MeshError, match="does not divide"):
        mesh_lib.mesh_from_config({"shape": {"data": jax.device_count() + 1}})
    with pytest.raises(mesh_lib.MeshError, match="Unknown key 'shapes'"):
        mesh_lib.mesh_from_config({"shapes": {"data": 1}})


def test_rules_overrides_are_checked():
    assert dict(rules_lib.rules_from_config({"kv_heads": None}))["kv_heads"] is None
    with pytest.raises(KeyError, match="Unknown logical axis 'head'"):
        rules_lib.rules_from_config({"head": "tensor"})
    with pytest.raises(ValueError, match="'model', which is not a mesh axis"):
        rules_lib.rules_from_config({"heads": "model"})
    with pytest.raises(ValueError, match="repeats a mesh axis"):
        rules_lib.rules_from_config({"batch": ["data", "data"]})


def test_logical_names_map_through_the_one_table():
    assert rules_lib.logical_spec(("layers", "embed", "heads")) == P(None, "fsdp", "tensor")
    assert rules_lib.logical_spec(("layers", "heads", "embed")) == P(None, "tensor", "fsdp")
    assert rules_lib.logical_spec(("vocab", "embed")) == P("tensor", "fsdp")
    assert rules_lib.logical_spec(("batch", "length", "act_embed")) == P(("data", "fsdp"), None, None)
    assert rules_lib.logical_spec(("lora_rank", "heads")) == P(None, "tensor")
    fsdp_only = rules_lib.rules_from_config({"heads": None, "kv_heads": None, "mlp": None, "vocab": None})
    assert rules_lib.logical_spec(("layers", "embed", "heads"), fsdp_only) == P(None, "fsdp", None)


def test_check_model_fits_mesh():
    mesh_lib.check_model_fits_mesh(TINY, {"data": 1, "fsdp": 4, "tensor": 2})
    with pytest.raises(mesh_lib.MeshError, match=r"num_key_value_heads=2 \('kv_heads'\) cannot be split over mesh "
                                                  r"axes tensor=3.*\{'kv_heads': None, 'act_kv_heads': None\}"):
        mesh_lib.check_model_fits_mesh(TINY, {"data": 1, "fsdp": 1, "tensor": 3})
    with pytest.raises(mesh_lib.MeshError, match=r"num_attention_heads=6 \('heads'\)"):
        mesh_lib.check_model_fits_mesh(TINY, {"data": 1, "fsdp": 1, "tensor": 4})
    with pytest.raises(mesh_lib.MeshError, match=r"hidden_size=72 \('embed'\) cannot be split over mesh axes "
                                                  r"fsdp=16"):
        mesh_lib.check_model_fits_mesh(TINY, {"data": 1, "fsdp": 16, "tensor": 1})
    with pytest.raises(mesh_lib.MeshError, match="vocab_size=331"):
        mesh_lib.check_model_fits_mesh(TINY.replace(vocab_size=331), {"data": 1, "fsdp": 1, "tensor": 2})
    replicate_kv = rules_lib.rules_from_config({"kv_heads": None, "act_kv_heads": None})
    mesh_lib.check_model_fits_mesh(TINY.replace(intermediate_size=138), {"data": 1, "fsdp": 1, "tensor": 3},
                                   replicate_kv)
    mesh_lib.check_fits_mesh({"bridge_mlp": (64, "bridge mlp width")}, {"data": 1, "fsdp": 1, "tensor": 4})
    with pytest.raises(mesh_lib.MeshError, match="bridge mlp width=66 .* or override the rule for 'bridge_mlp'"):
        mesh_lib.check_fits_mesh({"bridge_mlp": (66, "bridge mlp width")}, {"data": 1, "fsdp": 1, "tensor": 4})
    mesh_lib.check_batch_fits_mesh(8, {"data": 2, "fsdp": 4, "tensor": 2})
    with pytest.raises(mesh_lib.MeshError, match="batch size 6 does not split over the batch mesh axes "
                                                  "data=2 x fsdp=2"):
        mesh_lib.check_batch_fits_mesh(6, {"data": 2, "fsdp": 2, "tensor": 2})


def test_optimizer_state_follows_param_shardings():
    mesh = rules_lib.single_device_mesh()
    params = {"w": jax.ShapeDtypeStruct((4, 6), np.float32), "b": jax.ShapeDtypeStruct((6,), np.float32)}
    shardings = {"w": rules_lib.logical_sharding(("bridge_in", "bridge_mlp"), mesh),
                 "b": rules_lib.logical_sharding(("bridge_mlp",), mesh)}
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.masked(optax.adamw(1e-3), {"w": True, "b": False}))
    state = rules_lib.opt_state_shardings(opt, params, shardings, mesh)
    adam = state[1].inner_state[0]
    assert adam.mu["w"] == shardings["w"] and adam.nu["w"].spec == P("fsdp", "tensor")
    assert adam.count == NamedSharding(mesh, P())
    placed = jax.jit(opt.init, out_shardings=state)(jax.tree.map(lambda s: np.ones(s.shape, s.dtype), params))
    assert placed[1].inner_state[0].mu["w"].sharding == shardings["w"]


def test_distributed_args_from_environment():
    assert distributed.distributed_args({}) is None
    explicit = {"LATENTJAX_COORDINATOR": "10.0.0.1:1234", "LATENTJAX_NUM_PROCESSES": "4",
                "LATENTJAX_PROCESS_ID": "3", "SLURM_NTASKS": "8", "SLURM_PROCID": "1"}
    assert distributed.distributed_args(explicit) == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                                                          process_id=3)
    assert distributed.distributed_args({**explicit, "LATENTJAX_LOCAL_DEVICE_IDS": "0,1"})["local_device_ids"] == [0, 1]
    assert distributed.distributed_args({**explicit, "LATENTJAX_NUM_PROCESSES": "1",
                                         "LATENTJAX_PROCESS_ID": "0"}) is None
    with pytest.raises(distributed.DistributedError, match="Set all of"):
        distributed.distributed_args({"LATENTJAX_COORDINATOR": "h:1"})
    with pytest.raises(distributed.DistributedError, match="must lie in"):
        distributed.distributed_args({**explicit, "LATENTJAX_PROCESS_ID": "4"})
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_ID": "4097",
             "SLURM_STEP_NODELIST": "gpu[007-010],cpu1"}
    assert distributed.distributed_args(slurm) == dict(coordinator_address="gpu007:61441", num_processes=4,
                                                       process_id=2)
    assert distributed.distributed_args({**slurm, "LATENTJAX_COORDINATOR_PORT": "5000"})["coordinator_address"] \
        == "gpu007:5000"
    assert distributed.distributed_args({**slurm, "SLURM_NTASKS": "1"}) is None
    assert distributed.distributed_args({**slurm, "LATENTJAX_DISTRIBUTED": "off"}) is None
    assert distributed.distributed_args({"TPU_WORKER_HOSTNAMES": "a,b"}) == {}
    assert distributed.distributed_args({"LATENTJAX_DISTRIBUTED": "auto"}) == {}


@pytest.mark.parametrize("nodelist,host", [("node001", "node001"), ("node001,node002", "node001"),
                                           ("node[001-004]", "node001"), ("node[7,9-12],gpu3", "node7"),
                                           ("a-[01-02]-ib", "a-01-ib"), ("gpu[3]", "gpu3")])
def test_first_slurm_host(nodelist, host):
    assert distributed.first_slurm_host(nodelist) == host


def test_single_process_helpers():
    assert distributed.initialize_from_env({}) is False
    assert distributed.is_main_process()
    mesh = rules_lib.single_device_mesh()
    rows = distributed.process_rows(6, mesh)
    assert rows == slice(0, 6)
    batch = distributed.global_batch({"input_ids": np.arange(12).reshape(6, 2), "mask": np.ones((6, 2), bool)},
                                     mesh, axes={"mask": ("batch", "length")})
    assert batch["input_ids"].shape == (6, 2) and batch["input_ids"].sharding.spec == P(("data", "fsdp"), None)
    np.testing.assert_array_equal(distributed.to_host(batch)["input_ids"], np.arange(12).reshape(6, 2))
    distributed.barrier("noop")


def test_multi_process_start_registers_an_ordered_shutdown(monkeypatch):
    """A multi-process start registers jax.distributed.shutdown for interpreter exit (ordered: the shutdown barrier,
    then process 0's coordination service), and the handler does nothing once the runtime is already shut down."""
    import atexit

    calls, registered = [], []
    monkeypatch.setattr(distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(("initialize", kw)))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    monkeypatch.setattr(atexit, "register", registered.append)
    env = {"LATENTJAX_COORDINATOR": "10.0.0.1:1234", "LATENTJAX_NUM_PROCESSES": "2", "LATENTJAX_PROCESS_ID": "1"}
    assert distributed.initialize_from_env(env) is True
    assert calls == [("initialize", {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1})]
    assert registered == [distributed._shutdown_at_exit]
    monkeypatch.setattr(jax.distributed, "shutdown", lambda: calls.append(("shutdown",)))
    registered[0]()  # not initialized (any more): nothing to shut down
    assert calls[-1][0] == "initialize"
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    registered[0]()
    assert calls[-1] == ("shutdown",)


def test_setup_logging_process0_at_info():
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        distributed.setup_logging(logging.DEBUG)
        assert root.level == logging.DEBUG and "[p0]" in root.handlers[0].formatter._fmt
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


@pytest.mark.skipif(jax.device_count() == 8, reason="this process already has 8 devices: the suite runs directly")
def test_eight_device_suite():
    """Runs tests/test_sharding_mesh8.py with 8 host devices (meshes data=8, fsdp=4 x tensor=2, 2x2x2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTJAX_", "SLURM_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           os.path.join(ROOT, "tests", "test_sharding_mesh8.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 16, done.stdout[-2000:]  # not skipped for want of devices
