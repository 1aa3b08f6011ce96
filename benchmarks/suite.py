"""The GPU benchmark suite: latentjax and the seed's PyTorch stack, side by side, in one run.

    python benchmarks/suite.py --out $OUT --reference .devcarry/hf_reference.py

Random-weight models of the Llama-3.1-8B (sender) and Mistral-7B-v0.3 (receiver) shapes, bf16, one GPU, the
shapes of `shared/bench/hf_reference.py`:
  pair   bridge train step at batch 8 and 64 (bridge width 512, depth 2, 8 heads, K=16, sender prompt 128 tokens,
         receiver answer 32 tokens, sender tapped at layer 31); one bridged request (64-token prompt, 24 receiver
         tokens, next-token argmax); one text-relay request (50 greedy sender tokens, then the receiver); batch-64
         sampling of 64 new tokens after a 64-token prompt (temperature 1, top-p 0.95);
  lora   LoRA r=128 step on all seven projections, batch 4 x 512, without rematerialisation and with the `lean`
         policy (benchmarks/lora_8b.py);
  decode prefill tokens/s (batch 1 x 2048) and decode ms/token at batch 1 (greedy);
  steps  the pair part's bridge train steps alone;
  ref    the reference script, whose figures the table divides ours by (`--anchor`: an earlier run's JSON).
Each part runs in its own process (PyTorch and JAX never share the GPU). Timings: warm-up, then the median of
repeated runs with the device synchronised; train steps also at the training loop's rate (`loop_time`, keys
`*_loop_ms`). Writes $OUT/suite.json and prints one table last. Time limits in seconds, through the environment:
LATENTJAX_SUITE_LIMIT_<PART> per part, LATENTJAX_SUITE_LIMIT_LORA_CASE per LoRA case (LATENTJAX_SUITE_LORA lists
the cases, see `part_lora`); a part or case stopped at its limit is reported as an error and the rest go on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.environ.get("LATENTJAX_SUITE_TINY") == "1"  # CPU smoke test of the suite itself: small shapes


def fold_norms() -> bool:
    """Frozen models with the layers' norm scales folded into their projections (LATENTJAX_SUITE_FOLD=0: kept)."""
    return os.environ.get("LATENTJAX_SUITE_FOLD", "1") == "1"


def shapes():
    from latentjax.bridge.benchmark import LLAMA31_8B, MISTRAL_7B_V03

    if not TINY:
        return LLAMA31_8B, MISTRAL_7B_V03
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)
    return dict(LLAMA31_8B, vocab_size=512, **small), dict(MISTRAL_7B_V03, vocab_size=384, **small)


def median_time(fn, warm: int = 2, reps: int = 10) -> float:
    import jax
    import numpy as np

    for _ in range(warm):
        jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def loop_time(fn, steps: int = 10) -> float:
    """Seconds per call of `fn` run `steps` times back to back with one device synchronisation at the end: the
    rate of a training loop, which does not wait for each step (`latentjax.train.loop` looks at the metrics every
    `log_every` steps), so the host's dispatch of step n+1 overlaps step n. It is also what the reference's CUDA-event
    timing measures (GPU time from the step's first launch to its end), where `median_time`'s wall clock adds the
    host's dispatch before the first launch and the wake-up after the sync. `fn` must already be compiled."""
    import jax

    jax.block_until_ready(fn())
    start, out = time.perf_counter(), None
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


class Reported(dict):
    """Results printed as they are measured: a part stopped by its time limit still reports what it measured."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        print("RESULT " + json.dumps(self), flush=True)

    def update(self, other=(), **kw):
        super().update(other, **kw)
        print("RESULT " + json.dumps(self), flush=True)


def _pair_models() -> dict:
    """Both models (random bf16, per-layer weights: every path reads each layer's weights in place, the bridge
    step's backward included), the sender cut at its tap, and a bridge training state."""
    from ml_collections import ConfigDict

    from latentjax.bridge.forward import BridgedModel, SenderTap
    from latentjax.bridge.model import BridgeConfig, init_bridge
    from latentjax.models.config import from_hf_dict
    from latentjax.models.model import fold_norm_scales, fuse_projections, truncate_layers, unstack_layers
    from latentjax.parallel import rules as rules_lib
    from latentjax.train import state as state_lib
    from latentjax.train.optimizer import make_optimizer

    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    # cuDNN fused attention where it applies (training and prefill), XLA's for decode steps; the frozen models
    # with fused q/k/v and gate/up projections (LATENTJAX_SUITE_FUSED=0: separate) and the layers' RMSNorm scales
    # folded into them (LATENTJAX_SUITE_FOLD=0: kept), as the bridge and translator configs load them.
    common = dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl="auto")
    sender_shape, receiver_shape = shapes()
    sender_cfg, sender = unstack_layers(*_init(from_hf_dict(sender_shape, **common), 1, mesh, rules))
    receiver_cfg, receiver = _init(from_hf_dict(receiver_shape, **common), 2, mesh, rules)
    if os.environ.get("LATENTJAX_SUITE_RECEIVER", "flat") == "flat":  # "scanned": session 2's bridge step
        receiver_cfg, receiver = unstack_layers(receiver_cfg, receiver)
    if os.environ.get("LATENTJAX_SUITE_FUSED", "1") == "1":  # one q/k/v and one gate/up matmul per layer ("0": separate)
        sender_cfg, sender = fuse_projections(sender_cfg, sender)
        receiver_cfg, receiver = fuse_projections(receiver_cfg, receiver)
    if fold_norms():
        sender_cfg, sender = fold_norm_scales(sender_cfg, sender)
        receiver_cfg, receiver = fold_norm_scales(receiver_cfg, receiver)
    tap = SenderTap.make(sender_cfg, min(31, sender_cfg.num_layers - 1))
    _, tapped = truncate_layers(sender_cfg, sender, tap.config.num_layers)
    tapped = {k: v for k, v in tapped.items() if k != "lm_head"}
    bridge_cfg = BridgeConfig(sender_dim=sender_cfg.hidden_size, receiver_dim=receiver_cfg.hidden_size,
                              num_latents=16, depth=2, num_heads=8, width=512, output_scale_init=0.0027)
    opt_cfg = ConfigDict(dict(lr=1e-4, warmup_steps=0, decay="constant", end_lr_ratio=1.0, b1=0.9, b2=0.999,
                              eps=1e-8, weight_decay=0.01, clip_norm=1.0))
    optimizer, _ = make_optimizer(opt_cfg, 100)
    init = lambda rng: init_bridge(bridge_cfg, rng)
    shardings = state_lib.state_shardings(init, optimizer, mesh, rules)
    state = state_lib.init_state(init, optimizer, 0, shardings, mesh, rules)
    return dict(mesh=mesh, rules=rules, sender_cfg=sender_cfg, sender=sender, receiver_cfg=receiver_cfg,
                receiver=receiver, tap=tap, tapped=tapped, frozen={"sender": tapped, "receiver": receiver}, bridge_cfg=bridge_cfg,
                model=BridgedModel(tap, bridge_cfg, receiver_cfg, diversity_weight=0.0), optimizer=optimizer,
                shardings=shardings, state=state)


def decode_sender():
    """(config, params, mesh, rules) of the suite's sender as generation uses it: random bf16 weights of the 8B
    shape, per-layer, fused projections, folded norm scales (LATENTJAX_SUITE_FOLD=0: kept), `auto` attention (for
    decode A/B scripts)."""
    from latentjax.models.config import from_hf_dict
    from latentjax.models.model import fold_norm_scales, fuse_projections, unstack_layers
    from latentjax.parallel import rules as rules_lib

    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    cfg = from_hf_dict(shapes()[0], dtype="bfloat16", param_dtype="bfloat16", attention_impl="auto")
    cfg, params = fuse_projections(*unstack_layers(*_init(cfg, 1, mesh, rules)))
    if fold_norms():
        cfg, params = fold_norm_scales(cfg, params)
    return cfg, params, mesh, rules


def decode_ab_inputs():
    """What the decode A/B scripts share: `decode_sender()`, the b64 sample's 64 prompts of 64 tokens and the b1
    decode's 128-token prompt (random ids, seed 0), and the sample's sampling (temperature 1, top-p 0.95)."""
    import jax.numpy as jnp
    import numpy as np

    from latentjax.inference.sampling import SamplingConfig

    cfg, params, mesh, rules = decode_sender()
    rs = np.random.RandomState(0)
    prompts = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (64, 64)), jnp.int32)
    prompt1 = jnp.asarray(rs.randint(0, cfg.vocab_size - 256, (1, 128)), jnp.int32)
    return cfg, params, mesh, rules, prompts, prompt1, SamplingConfig(temperature=1.0, top_p=0.95)


def _init(cfg, seed, mesh, rules):
    import jax

    from latentjax.models.model import init_params

    return cfg, init_params(cfg, jax.random.PRNGKey(seed), mesh, rules)


def bridge_train_step(m: dict, compiler_options: dict | str = "loop"):
    """one_step(batch, rs) -> a zero-argument function running one step on a random batch of that size: the
    reference's bridge step shape (K=16, answer 32, sender prompt 128), compiled as the bridge configs' training
    loop does (`train.xla_command_buffers`: FROZEN_PAIR_COMMAND_BUFFERS) unless `compiler_options` are given. The batch is placed on the device
    once, before any timing, as the reference creates its batch tensors on the GPU."""
    import jax
    import numpy as np

    from latentjax.bridge.batching import BATCH_AXES
    from latentjax.train.step import FROZEN_PAIR_COMMAND_BUFFERS, command_buffer_options, make_train_step

    if compiler_options == "loop":
        compiler_options = command_buffer_options(FROZEN_PAIR_COMMAND_BUFFERS)
    step = make_train_step(m["model"].loss, m["optimizer"], m["mesh"], m["rules"], m["shardings"], BATCH_AXES, 1,
                           compiler_options=compiler_options)
    sv, rv = m["sender_cfg"].vocab_size - 256, m["receiver_cfg"].vocab_size - 256

    def one_step(batch: int, rs):
        k, answer, sender_len = 16, 32, 128
        b = {"sender_input_ids": rs.randint(0, sv, (batch, sender_len)).astype(np.int32),
             "sender_attention_mask": np.ones((batch, sender_len), np.int32),
             "receiver_input_ids": rs.randint(0, rv, (batch, k + answer)).astype(np.int32),
             "receiver_attention_mask": np.ones((batch, k + answer), np.int32),
             "receiver_loss_mask": np.concatenate([np.zeros((batch, k)), np.ones((batch, answer))], 1).astype(np.int32),
             "soft_start": np.zeros((batch,), np.int32)}
        b = jax.device_put(b, step.batch_shardings(b.keys()))  # on the device before timing, as the reference's

        def run():
            m["state"], metrics = step(m["state"], m["frozen"], b)
            return metrics["loss"]
        return run

    return one_step


def _bridge_steps(m: dict, res: dict, rs) -> None:
    res["bridge_params"] = m["bridge_cfg"].num_params
    one_step = bridge_train_step(m)
    for batch in (8, 64):
        run = one_step(batch, rs)
        sec = median_time(run)
        res[f"bridge_step_B{batch}_ms"] = sec * 1e3
        res[f"bridge_step_B{batch}_examples_per_s"] = batch / sec
        res[f"bridge_step_B{batch}_loop_ms"] = loop_time(run, 20) * 1e3


def request_fn(serve, rules):
    """The bridged request as a pure function (bridge variables, frozen weights, sender ids [1, 64], receiver ids
    [1, 24]) -> the receiver's next token: sender to its tap, bridge, receiver over [soft tokens] + [ids]."""
    import jax.numpy as jnp

    from latentjax.parallel import rules as rules_lib

    def bridged_request(params, frozen, ids, rid):
        ones = lambda n: jnp.ones((1, n), jnp.int32)  # noqa: E731
        with rules_lib.axis_rules(rules):
            soft = serve.soft_tokens(params, frozen, ids, ones(ids.shape[1])).soft_tokens.astype(jnp.bfloat16)
            x = jnp.concatenate([soft, serve.receiver_embed(frozen, rid)], axis=1)
            return jnp.argmax(serve.receiver_logits(frozen, x, ones(x.shape[1]))[:, -1], -1)

    return bridged_request


def _bridged_request(m: dict, res: dict, rs) -> None:
    import jax
    import jax.numpy as jnp

    from latentjax.bridge.forward import BridgedModel
    from latentjax.models.model import unstack_layers

    rules, mesh = m["rules"], m["mesh"]
    sv, rv = m["sender_cfg"].vocab_size - 256, m["receiver_cfg"].vocab_size - 256
    ids = jnp.asarray(rs.randint(0, sv, (1, 64)), jnp.int32)
    rid = jnp.asarray(rs.randint(0, rv, (1, 24)), jnp.int32)
    if m["receiver_cfg"].scan_layers:  # inference reads per-layer weights
        m["receiver_cfg"], m["receiver"] = unstack_layers(m["receiver_cfg"], m["receiver"])
    serve = BridgedModel(m["tap"], m["bridge_cfg"], m["receiver_cfg"], diversity_weight=0.0)
    serve_frozen = {"sender": m["tapped"], "receiver": m["receiver"]}

    bridged_request = jax.jit(request_fn(serve, rules))
    with jax.set_mesh(mesh):
        res["latency_bridge_ms"] = median_time(lambda: bridged_request(m["state"].params, serve_frozen, ids, rid)) * 1e3
    m["relay_prompt"], m["relay_rid"] = ids, rid


def _relay_and_sampling(m: dict, res: dict, rs) -> None:
    import jax
    import jax.numpy as jnp

    from latentjax.inference.generate import decoder_apply, generate
    from latentjax.inference.sampling import SamplingConfig

    rules, mesh, sender_cfg, sender = m["rules"], m["mesh"], m["sender_cfg"], m["sender"]
    sv, rv = sender_cfg.vocab_size - 256, m["receiver_cfg"].vocab_size - 256
    ids, rid = m["relay_prompt"], m["relay_rid"]
    receiver_cfg, receiver = m["receiver_cfg"], m["receiver"]
    receiver_apply = jax.jit(lambda p, x: jnp.argmax(_decoder_logits(receiver_cfg, rules, p, x)[:, -1], -1))

    def relay_request():
        out = generate(sender_cfg, sender, ids, max_new_tokens=50, mesh=mesh, rules=rules,
                       apply_fn=decoder_apply(sender_cfg))
        msg = out.tokens % rv
        with jax.set_mesh(mesh):
            return receiver_apply(receiver, jnp.concatenate([msg, rid], axis=1))

    res["latency_text_relay_50tok_ms"] = median_time(relay_request, warm=1, reps=5) * 1e3
    prompts = jnp.asarray(rs.randint(0, sv, (64, 64)), jnp.int32)
    hot = SamplingConfig(temperature=1.0, top_p=0.95)
    sample = lambda: generate(sender_cfg, sender, prompts, max_new_tokens=64, sampling=hot,
                              rng=jax.random.key(0), mesh=mesh, rules=rules).tokens
    sec = median_time(sample, warm=1, reps=3)
    res["sample_B64_new64_ms"] = sec * 1e3
    res["sample_B64_tokens_per_s"] = 64 * 64 / sec


def part_pair() -> dict:
    import jax
    import numpy as np

    res, rs = Reported(), np.random.RandomState(0)
    m = _pair_models()
    _bridge_steps(m, res, rs)
    del m["frozen"]  # from here on only inference: per-layer weights
    _bridged_request(m, res, rs)
    _relay_and_sampling(m, res, rs)
    res.update(_prefill_and_decode(m["sender_cfg"], m["sender"], m["mesh"], m["rules"], rs,
                                   m["sender_cfg"].vocab_size - 256))
    res["peak_device_gib"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
    return res


def part_steps() -> dict:
    """The bridge train steps alone (the pair part's first figures, for a quick check)."""
    import numpy as np

    res = Reported()
    _bridge_steps(_pair_models(), res, np.random.RandomState(0))
    return res


def part_infer() -> dict:
    """The pair part without the bridge steps: requests, sampling, prefill and decode (for --infer_flags)."""
    import numpy as np

    res, rs = Reported(), np.random.RandomState(0)
    m = _pair_models()
    del m["frozen"]
    _bridged_request(m, res, rs)
    _relay_and_sampling(m, res, rs)
    res.update(_prefill_and_decode(m["sender_cfg"], m["sender"], m["mesh"], m["rules"], rs,
                                   m["sender_cfg"].vocab_size - 256))
    return res


def _decoder_logits(config, rules, params, ids, mask=None):
    from latentjax.models.decoder import Decoder
    from latentjax.parallel import rules as rules_lib

    with rules_lib.axis_rules(rules):
        return Decoder(config).apply({"params": params}, ids, attention_mask=mask).logits


def part_lora() -> dict:
    """Each case in its own process: peak device memory is per process. Cases (LATENTJAX_SUITE_LORA, default
    "none,lean,none:layers=flat"): "none" (no remat, keys lora_B4_T512_noremat_*), "lean" (saves q/k/v and the
    attention context; keys ..._remat_lean_*, compared with the reference's remat run), "minimal" (also saves the MLP
    product and the branch outputs; keys ..._remat_*); cuDNN attention where it applies, XLA's if cuDNN refuses; a
    case "minimal:chunk=128" computes the loss 128 positions at a time (model.loss_chunk; keys
    lora_B4_T512_remat_chunk128_...), "minimal:chunk=128:backward=recompute" with the recomputing backward (keys
    ..._remat_chunk128_recompute_...), "none:layers=flat" with per-layer base weights (keys ..._noremat_flat_...)."""
    res = {}
    tags = {"none": "noremat", "minimal": "remat", "lean": "remat_lean"}
    case_limit = float(os.environ.get("LATENTJAX_SUITE_LIMIT_LORA_CASE", "0")) or None  # one slow case loses no other
    for case in os.environ.get("LATENTJAX_SUITE_LORA", "none,lean,none:layers=flat").split(","):
        remat, _, opts = case.partition(":")
        if remat not in tags:
            raise ValueError(f"LATENTJAX_SUITE_LORA case {case!r}: remat must be one of {sorted(tags)}.")
        # options as lora_8b.py's cases: chunk=N, backward=recompute, layers=flat, cmdbuf=on -> tag suffixes
        # _chunkN, _recompute, _flat, _cmdbuf_on
        short = {"chunk": "chunk", "backward": "", "layers": "", "cmdbuf": "cmdbuf_"}
        tag = tags[remat] + "".join("_" + short.get(k, k + "_") + v for k, _, v in
                                    (o.partition("=") for o in opts.split(":") if o and o != "chunk=0"))
        r = {}
        for attention in ("auto", "xla"):
            one = f"{remat}:{attention}" + (f":{opts}" if opts else "")
            r = run_part([os.path.join(HERE, "lora_8b.py"), "--one", one], timeout=case_limit)
            if "error" not in r:
                res[f"lora_B4_T512_{tag}_attention"] = attention
                break
            if "timed out" in r["error"]:  # XLA's attention would not be faster to compile or run
                break
        if "error" in r:
            res[f"lora_B4_T512_{tag}_error"] = r["error"]
            continue
        res[f"lora_B4_T512_{tag}_ms"] = r["step_ms"]
        res[f"lora_B4_T512_{tag}_tokens_per_s"] = r["tokens_per_s"]
        res[f"lora_B4_T512_{tag}_peak_mem_gib"] = r["peak_device_gib"]
        res[f"lora_B4_T512_{tag}_mfu_vs_813"] = r["mfu_vs_813"]
        res[f"lora_B4_T512_{tag}_first_steps_ms"] = r["first_steps_ms"]
        res[f"lora_B4_T512_{tag}_loop_ms"] = r["loop_step_ms"]
    return res


def part_decode() -> dict:
    """The same figures with the default scanned layers (for comparison with the per-layer ones in `pair`)."""
    import jax
    import numpy as np

    from latentjax.models.config import from_hf_dict
    from latentjax.models.model import init_params
    from latentjax.parallel import rules as rules_lib

    mesh, rules = rules_lib.single_device_mesh(), rules_lib.DEFAULT_RULES
    cfg = from_hf_dict(shapes()[0], dtype="bfloat16", param_dtype="bfloat16", attention_impl="auto")
    params = init_params(cfg, jax.random.PRNGKey(0), mesh, rules)
    res = _prefill_and_decode(cfg, params, mesh, rules, np.random.RandomState(0), cfg.vocab_size - 256)
    return {f"scanned_{k}": v for k, v in res.items()}


def _prefill_and_decode(cfg, params, mesh, rules, rs, sv) -> dict:
    import jax
    import numpy as np

    from latentjax.inference.generate import generate

    x = rs.randint(0, sv, (1, 2048)).astype(np.int32)
    fwd = jax.jit(lambda p, i: _decoder_logits(cfg, rules, p, i)[:, -1])
    with jax.set_mesh(mesh):
        sec = median_time(lambda: fwd(params, x))
    res = {"prefill_B1_T2048_tokens_per_s": 2048 / sec}
    prompt = rs.randint(0, sv, (1, 128)).astype(np.int32)
    with jax.set_mesh(mesh):  # the same forward on the 128-token prompt: what generate spends before decoding
        prefill = median_time(lambda: fwd(params, prompt))
    # decode steps take attention_impl "auto"'s choice (decoder.attention_implementation), the prefill cuDNN's
    full = median_time(lambda: generate(cfg, params, prompt, max_new_tokens=129, mesh=mesh, rules=rules).tokens,
                       reps=3)
    res["decode_B1_ms_per_token"] = (full - prefill) / 129 * 1e3
    return res


# lora has no tiny mode: GPU only
PARTS = {"pair": part_pair, "lora": part_lora, "decode": part_decode, "infer": part_infer, "steps": part_steps}
COMPARE = ["bridge_step_B8_ms", "bridge_step_B64_ms", "latency_bridge_ms", "latency_text_relay_50tok_ms",
           "sample_B64_tokens_per_s", "lora_B4_T512_noremat_ms", "lora_B4_T512_remat_ms",
           "lora_B4_T512_noremat_peak_mem_gib", "lora_B4_T512_remat_peak_mem_gib", "lora_B4_T512_remat_lean_ms",
           "lora_B4_T512_remat_lean_peak_mem_gib", "lora_B4_T512_noremat_flat_ms",
           "lora_B4_T512_noremat_flat_peak_mem_gib", "lora_B4_T512_remat_lean_flat_ms",
           "lora_B4_T512_remat_lean_flat_peak_mem_gib"]


# A training step's loop rate (`loop_time`) against the reference's step time (CUDA events) of the same case. Every
# LoRA case against the reference's run of its kind: no remat (stacked, per-layer or fused base) against its no-remat
# run, every remat policy (`lean` saves less than the reference's remat run) against its remat run.
LORA_KEY = re.compile(r"lora_B4_T512_(noremat|remat)\w*?(?<!first_steps)_(loop_ms|ms|peak_mem_gib)")


def reference_key(key: str) -> str:
    if m := LORA_KEY.fullmatch(key):
        return f"lora_B4_T512_{m[1]}_" + ("ms" if m[2] == "loop_ms" else m[2])
    return re.sub(r"^(bridge_step_B\d+)_loop_ms$", r"\1_ms", key)


def run_part(args: list[str], timeout: float = None, env: dict = None) -> dict:
    """Run one part in its own process; with `timeout`, keep what it reported before being stopped."""
    try:
        proc = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=timeout, env=env)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        as_text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        out, err, code = as_text(e.stdout), as_text(e.stderr), f"timed out after {timeout:.0f} s"
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    res = json.loads(lines[-1][7:]) if lines else {}
    if code:
        sys.stderr.write(out[-2000:] + err[-4000:])
        res["error"] = f"{' '.join(args[-2:])}: exit {code}"
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--reference", default="", help="path of hf_reference.py (skipped when empty)")
    parser.add_argument("--anchor", default="",
                        help="an hf_anchor.json that hf_reference.py wrote in an earlier call on the same "
                             "machine: compare against it instead of running the reference again")
    parser.add_argument("--parts", default="pair,lora")  # add "decode" for the scanned-layer figures
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--infer_flags", default="",
                        help="';'-separated name=XLA_FLAGS variants: the inference figures measured once per variant")
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps(PARTS[args.part]()), flush=True)
        return
    os.makedirs(args.out, exist_ok=True)
    ours, errors, ref = {}, [], {}

    def save() -> None:  # after every part: a run cut short still leaves what it measured
        with open(os.path.join(args.out, "suite.json"), "w") as f:
            json.dump({"ours": ours, "reference": ref, "errors": errors}, f, indent=1)

    if args.reference:  # first: the comparison needs it whatever happens to our parts
        start = time.perf_counter()
        subprocess.run([sys.executable, args.reference], env=dict(os.environ, OUT=args.out))
        path = os.path.join(args.out, "hf_anchor.json")
        ref = json.load(open(path)) if os.path.exists(path) else {}
        ours["wall_s_reference"] = time.perf_counter() - start
        save()
    elif args.anchor:
        ref = json.load(open(args.anchor))
    for part in args.parts.split(","):
        start = time.perf_counter()
        limit = float(os.environ.get(f"LATENTJAX_SUITE_LIMIT_{part.upper()}", "0")) or None
        r = run_part([__file__, "--part", part], timeout=limit)
        if "error" in r:
            errors.append(r.pop("error"))
        ours.update(r)
        ours[f"wall_s_{part}"] = time.perf_counter() - start
        save()
    for variant in filter(None, args.infer_flags.split(";")):
        name, _, flags = variant.partition("=")
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        r = run_part([__file__, "--part", "infer"], timeout=float(os.environ.get("LATENTJAX_SUITE_LIMIT_INFER", 300)),
                     env=env)
        if "error" in r:
            errors.append(f"infer_flags {name}: " + r.pop("error"))
        ours.update({f"{k}_{name}": v for k, v in r.items()})
        save()
    print("\n| figure | latentjax | reference | reference / ours (time) or ours / reference (rate) |\n|---|---|---|---|")
    for key in list(dict.fromkeys(COMPARE + list(ours))):
        a, b = ours.get(key), ref.get(reference_key(key))
        ratio = ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b:
            ratio = f"{(a / b) if key.endswith('per_s') else (b / a):.2f}x"
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
        print(f"| {key} | {fmt(a)} | {fmt(b)} | {ratio} |")
    for e in errors:
        print(f"| error | {e} | | |")


if __name__ == "__main__":
    main()
