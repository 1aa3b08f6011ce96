#!/bin/bash
# Session 7 call 1: b64 sampling and b1 decode under XLA flag variants (one process each), then the b64 sample's
# per-kernel profile with its optimized HLO.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
declare -A V
V[base]=""
V[exh]="--xla_gpu_exhaustive_tiling_search=true"
V[heroless]="--xla_gpu_experimental_enable_triton_heroless_priority_fusion=true"
V[mof]="--xla_gpu_unsupported_enable_triton_multi_output_fusion=true"
V[blocklevel]="--xla_gpu_experimental_enable_fusion_block_level_rewriter=true"
V[alltriton]="--xla_gpu_experimental_all_fusions_with_triton=true"
echo "== decode kernel A/B"; t0=$(date +%s); timeout 220 python3 .devcarry/decode_ab.py auto,pallas 2>&1 | grep -v -i warn | tail -25; echo "A/B took $(( $(date +%s) - t0 )) s"
for v in base exh; do
  t0=$(date +%s)
  XLA_FLAGS="${V[$v]}" timeout 150 python3 benchmarks/profile_kernels.py --out $OUT --only sample_b64,decode_b1 \
    --no_trace --tag $v 2>&1 | grep -E "PROFILE|Error|error" | head -5
  echo "variant $v took $(( $(date +%s) - t0 )) s"
done
t0=$(date +%s)
XLA_FLAGS="--xla_dump_to=/tmp/dg --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*generate.*" timeout 150 \
  python3 benchmarks/profile_kernels.py --out $OUT --only sample_b64 --top 60 --tag trace 2>&1 | grep -E "PROFILE|Error" | cut -c1-300
(cd /tmp/dg && tar czf $OUT/hlo_sample.tgz $(ls | grep -E "after_optimizations.txt$|after_optimizations-buffer" | head -4))
echo "trace took $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import json, glob, os
print("| variant | sample_b64 ms | tokens/s | decode_b1 32 tok ms |")
print("|---|---|---|---|")
for p in sorted(glob.glob(os.path.join(os.environ["OUT"], "profile_kernels_*.json"))):
    r = json.load(open(p)); s = r.get("sample_b64", {}).get("wall_ms"); d = r.get("decode_b1", {}).get("wall_ms")
    print(f"| {os.path.basename(p)[16:-5]} | {s} | {round(4096 / s * 1e3) if s else ''} | {d} |")
PY
