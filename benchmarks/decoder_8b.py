"""GPU check and benchmark of the decoder at real shapes (Llama-3.1-8B, Mistral-7B-v0.3), random weights.

    python benchmarks/decoder_8b.py --shape llama31_8b --workdir /tmp/ckpt --out $OUT

Steps, each in its own process so PyTorch and JAX never share the GPU's memory:
  write   transformers builds the random model on the GPU in bf16, saves it as sharded safetensors, and stores its
          bf16 and float32 logits for a fixed batch (the float32 ones are the truth both bf16 stacks are held to);
  ours    latentjax loads the folder (load time, peak host memory), computes bf16 logits and compares them; then
          times prefill (tokens/s) and decode (ms/token) at batch 1 and 64.
A table is printed last and everything is written to $OUT/decoder_<shape>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SHAPES = {
    "llama31_8b": dict(
        family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=131072,
        rope_theta=500000.0, bos_token_id=128000, eos_token_id=128009,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
    "mistral7b_v03": dict(
        family="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=32768,
        rope_theta=1000000.0, sliding_window=None, bos_token_id=1, eos_token_id=2),
}
SHAPES["tiny"] = dict(SHAPES["llama31_8b"], vocab_size=512, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # CPU smoke test
PARITY_BATCH, PARITY_LEN = 2, 256


def parity_ids(vocab: int):
    import numpy as np

    return np.random.RandomState(0).randint(10, vocab, size=(PARITY_BATCH, PARITY_LEN))


def step_write(shape: str, workdir: str) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

    spec = dict(SHAPES[shape])
    family = spec.pop("family")
    cfg = (LlamaConfig if family == "llama" else MistralConfig)(**spec)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(workdir, max_shard_size="4GB")
    write_s = time.perf_counter() - start
    ids = torch.tensor(parity_ids(cfg.vocab_size), device=device)
    with torch.no_grad():
        np.save(os.path.join(workdir, "ref_bf16.npy"), model(ids).logits.float().cpu().numpy())
        model = model.float()
        np.save(os.path.join(workdir, "ref_f32.npy"), model(ids).logits.cpu().numpy())
    return {"write_checkpoint_s": write_s}


class HostMemorySampler:
    """Peak anonymous (heap) and file-backed (mmap page cache) resident memory, sampled every 20 ms.
    ru_maxrss alone counts the safetensors mmap pages, which the kernel can drop at any time."""

    def __init__(self):
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            with open("/proc/self/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) / 2**20)
            self._stop.wait(0.02)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {f"peak_host_{k}_gib": v for k, v in self.peak.items()}


def step_ours(shape: str, workdir: str, scan_unroll: int = 1) -> dict:
    import jax
    import numpy as np

    import latentjax
    from latentjax.inference.generate import generate
    from latentjax.inference.sampling import SamplingConfig

    res = {}
    sampler = HostMemorySampler()
    start = time.perf_counter()
    model = latentjax.from_pretrained(workdir, dtype="bfloat16", scan_unroll=scan_unroll)
    jax.block_until_ready(model.params)
    res["load_s"] = time.perf_counter() - start
    res.update(sampler.stop())
    res["checkpoint_gib"] = sum(os.path.getsize(os.path.join(workdir, f)) for f in os.listdir(workdir)
                                if f.endswith(".safetensors")) / 2**30
    res["peak_host_rss_gib_after_load"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    ids = parity_ids(model.config.vocab_size)
    ours = np.asarray(model(ids), np.float64)
    ref16 = np.load(os.path.join(workdir, "ref_bf16.npy")).astype(np.float64)
    ref32 = np.load(os.path.join(workdir, "ref_f32.npy")).astype(np.float64)
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())
    res["rel_err_ours_bf16_vs_hf_bf16"] = rel(ours, ref16)
    res["rel_err_ours_bf16_vs_hf_f32"] = rel(ours, ref32)
    res["rel_err_hf_bf16_vs_hf_f32"] = rel(ref16, ref32)
    l2 = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    res["l2_rel_err_ours_bf16_vs_hf_bf16"] = l2(ours, ref16)
    res["l2_rel_err_ours_bf16_vs_hf_f32"] = l2(ours, ref32)
    res["l2_rel_err_hf_bf16_vs_hf_f32"] = l2(ref16, ref32)
    res["top1_agree_vs_hf_bf16"] = float((ours.argmax(-1) == ref16.argmax(-1)).mean())
    del ours, ref16, ref32

    def timed(fn, reps=5):
        fn()  # compile + warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    rs = np.random.RandomState(1)
    for batch, length in ((1, 2048), (64, 128)):
        x = rs.randint(10, model.config.vocab_size, size=(batch, length))
        sec = timed(lambda: jax.block_until_ready(model(x)))
        res[f"prefill_b{batch}_t{length}_tokens_per_s"] = batch * length / sec
    prompt, new = 128, 128
    for batch, sampling in ((1, SamplingConfig()), (64, SamplingConfig(temperature=1.0, top_p=0.95))):
        x = rs.randint(10, model.config.vocab_size, size=(batch, prompt))
        run = lambda n: jax.block_until_ready(generate(model.config, model.params, x, max_new_tokens=n,
                                                       sampling=sampling, rng=jax.random.key(0)).tokens)
        full, one = timed(lambda: run(new), reps=3), timed(lambda: run(1), reps=3)
        res[f"decode_b{batch}_ms_per_token"] = (full - one) / (new - 1) * 1e3
        res[f"generate_b{batch}_{new}_tokens_s"] = full
        res[f"generate_b{batch}_tokens_per_s"] = batch * new / full
    res["peak_host_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    stats = jax.devices()[0].memory_stats() or {}
    res["peak_device_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
    res["device"] = jax.devices()[0].device_kind
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=list(SHAPES), required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--step", choices=["all", "write", "ours"], default="all")
    parser.add_argument("--scan_unroll", type=int, default=1, help="layers per scan iteration (decode-speed knob)")
    args = parser.parse_args()
    if args.step != "all":
        result = (step_write(args.shape, args.workdir) if args.step == "write"
                  else step_ours(args.shape, args.workdir, args.scan_unroll))
        print("RESULT " + json.dumps(result), flush=True)
        return
    os.makedirs(args.workdir, exist_ok=True)
    results = {"shape": args.shape, "scan_unroll": args.scan_unroll}
    for step in ("write", "ours"):
        proc = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--workdir", args.workdir,
                               "--step", step, "--scan_unroll", str(args.scan_unroll)], capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-3000:])
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"step {step} failed (exit {proc.returncode})")
        results.update(json.loads(lines[-1][7:]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"decoder_{args.shape}.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n| {args.shape} | value |\n|---|---|")
    for k, v in results.items():
        print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    main()
