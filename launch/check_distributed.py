"""Smoke test for a multi-process set-up: sharded load, train step, Orbax save and restore, all hosts agreeing.

Run it first on a new cluster (or locally, as the tests do):

    sbatch launch/slurm_multinode.sbatch launch/check_distributed.py --model /path/to/hf_model --mesh -1,8,1
    python launch/local_multiprocess.py -n 2 -d 2 -- launch/check_distributed.py --model M --mesh 1,2,2 --out D

For each --mesh it loads the model on the mesh (frozen), adds a small trainable bridge-like projection (logical
names bridge_in x bridge_mlp) with an SGD-momentum optimizer, runs one jitted step (gradients for the projection
and, as a check, for every base weight), saves the trainable state with Orbax from all processes, restores it
(into the same sharding and fully replicated), and runs a second step from the restored state (with --generate N, also the forward and N greedy tokens). With --out, each
process writes `result_p<i>.npz` there (losses, global values of the trained tensors, the mesh's process layout).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

log = logging.getLogger("check_distributed")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face Llama/Mistral folder")
    p.add_argument("--mesh", action="append", help="data,fsdp,tensor sizes (-1 = the rest); repeatable")
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--generate", type=int, default=0, help="also run the forward and generate this many tokens")
    p.add_argument("--out", default=None, help="folder for checkpoints and result_p<i>.npz (seen by all hosts)")
    return p.parse_args(argv)


def check_mesh(args, shape, out_dir):
    """One mesh: load, step, save, restore, step. Returns {name: numpy array} (the same on every process)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import orbax.checkpoint as ocp

    import latentjax
    from latentjax.parallel import distributed
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.parallel import rules as rules_lib

    t0 = time.time()
    mesh, rules = mesh_lib.mesh_from_config({"shape": shape})
    log.info("mesh %s", mesh_lib.describe(mesh))
    mesh_lib.check_batch_fits_mesh(args.batch, mesh, rules)
    model = latentjax.from_pretrained(args.model, dtype=args.dtype, mesh=mesh, rules=rules)
    cfg = model.config
    frozen_shardings = jax.tree.map(lambda x: x.sharding, model.params)
    log.info("loaded %s in %.1fs", args.model, time.time() - t0)

    # A trainable projection with logical names: its shardings and its optimizer state's come from the rules.
    bridge = nn.Dense(cfg.hidden_size, use_bias=False, param_dtype=jnp.float32,
                      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.05),
                                                               ("bridge_in", "bridge_mlp")))
    x0 = jnp.zeros((1, cfg.hidden_size))
    boxed = jax.eval_shape(bridge.init, jax.random.key(0), x0)["params"]
    train_shardings = rules_lib.shardings_of(boxed, mesh, rules)
    optimizer = optax.sgd(0.05, momentum=0.9)
    opt_shardings = rules_lib.opt_state_shardings(optimizer, rules_lib.unbox(boxed), train_shardings, mesh)
    with jax.set_mesh(mesh):
        trainable = jax.jit(lambda r: rules_lib.unbox(bridge.init(r, x0)["params"]),
                            out_shardings=train_shardings)(jax.random.key(1))
        opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(trainable)

    def loss_fn(trainable, frozen, batch):
        emb = model.embed(frozen, batch["input_ids"])
        emb = emb + bridge.apply({"params": trainable}, emb)
        logits = model.apply(frozen, attention_mask=batch["attention_mask"], inputs_embeds=emb).logits
        logp = jax.nn.log_softmax(logits[:, :-1])
        nll = -jnp.take_along_axis(logp, batch["input_ids"][:, 1:, None], axis=-1)[..., 0]
        w = batch["attention_mask"][:, 1:].astype(jnp.float32)
        return jnp.sum(nll * w) / jnp.sum(w)

    def step(trainable, opt_state, frozen, batch):
        with rules_lib.axis_rules(rules):
            loss, (g_train, g_frozen) = jax.value_and_grad(loss_fn, argnums=(0, 1))(trainable, frozen, batch)
        updates, opt_state = optimizer.update(g_train, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss, g_frozen

    batch_shardings = {k: rules_lib.batch_sharding(mesh, 2, rules) for k in ("input_ids", "attention_mask")}
    scalar = rules_lib.replicated(mesh)
    step = jax.jit(step, in_shardings=(train_shardings, opt_shardings, frozen_shardings, batch_shardings),
                   out_shardings=(train_shardings, opt_shardings, scalar, frozen_shardings))

    # The same global batch on every run; each process feeds only the rows its devices hold.
    rs = np.random.RandomState(0)
    ids = rs.randint(3, cfg.vocab_size, (args.batch, args.seq)).astype(np.int32)
    mask = np.ones_like(ids, dtype=bool)
    mask[::2, : args.seq // 4] = False  # some left padding
    rows = distributed.process_rows(args.batch, mesh, rules)
    batch = distributed.global_batch({"input_ids": ids[rows], "attention_mask": mask[rows]}, mesh, rules)

    with jax.set_mesh(mesh):
        trainable, opt_state, loss1, g_frozen = step(trainable, opt_state, model.params, batch)
    log.info("step 1 loss %.6f (%.1fs)", float(loss1), time.time() - t0)

    state = {"trainable": trainable, "opt_state": opt_state, "step": jax.device_put(jnp.int32(1), scalar)}
    if out_dir:
        ckpt = os.path.join(os.path.abspath(out_dir), "ckpt_" + "x".join(map(str, mesh.shape.values())))
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(ckpt, state, force=True)  # every process calls save: Orbax writes each one's shards
        checkpointer.wait_until_finished()
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored = checkpointer.restore(ckpt, target)
        replicated_target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=scalar), state)
        restored_rep = checkpointer.restore(ckpt, replicated_target)
        for x, y, z in zip(*map(jax.tree.leaves, (state, restored, restored_rep))):
            assert y.sharding == x.sharding and z.sharding == scalar, (x.sharding, y.sharding, z.sharding)
        for a, b, c in zip(*map(jax.tree.leaves, distributed.to_host((state, restored, restored_rep)))):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
        log.info("orbax save/restore ok (%.1fs)", time.time() - t0)
        state = restored
    with jax.set_mesh(mesh):
        trainable2, _, loss2, _ = step(state["trainable"], state["opt_state"], model.params, batch)
    log.info("step 2 loss %.6f (%.1fs)", float(loss2), time.time() - t0)

    results = {"loss1": loss1, "loss2": loss2, "trainable1": trainable, "trainable2": trainable2,
               "grad_base": g_frozen}
    if args.generate:  # the model's own entry points on global inputs: forward and greedy generation
        from latentjax.inference.generate import generate

        results["logits"] = model(batch["input_ids"], batch["attention_mask"])
        # Host numpy prompts, the same on every process (generate() reads the mask on the host to check the
        # left padding, which a global array spanning other processes' devices does not allow).
        results["generated"] = generate(cfg, model.params, np.where(mask, ids, 0), mask,
                                        max_new_tokens=args.generate, mesh=mesh, rules=rules).tokens
        log.info("forward and generation ok (%.1fs)", time.time() - t0)
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(distributed.to_host(results))}
    flat["mesh_processes"] = np.vectorize(lambda d: d.process_index)(mesh.devices)
    flat["process_rows"] = np.array([rows.start, rows.stop])
    return flat


def main(argv=None) -> None:
    args = parse(argv)
    from latentjax.parallel import distributed

    distributed.initialize_from_env()
    distributed.setup_logging()
    import jax
    import numpy as np

    t0 = time.time()
    results = {}
    for text in args.mesh or ["-1,1,1"]:
        shape = [int(s) for s in text.split(",")]
        for key, value in check_mesh(args, shape, args.out).items():
            results[f"{text}/{key}"] = value
    if args.out:  # one file per process, so a test can check that every process got the same global values
        np.savez(os.path.join(args.out, f"result_p{jax.process_index()}.npz"), **results)
    distributed.barrier("check_distributed_done")
    log.info("done in %.1fs: %d process(es), %d devices", time.time() - t0, jax.process_count(), jax.device_count())


if __name__ == "__main__":
    main()
