#!/bin/bash
# Session 9, device call 2 (same warm machine as call1.sh): the b64 sample under XLA flag variants, one process each
# (decode_ab.py with XLA's attention, b1 skipped), then the b64 sample's per-kernel profile with its optimized HLO.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
declare -A V
V[base]=""
V[exh]="--xla_gpu_exhaustive_tiling_search=true"
V[heroless]="--xla_gpu_experimental_enable_triton_heroless_priority_fusion=true"
V[nocmdbuf]="--xla_gpu_enable_command_buffer="
for v in ${VARIANTS:-base exh heroless base}; do
  t0=$(date +%s)
  XLA_FLAGS="${V[$v]}" AB_SKIP_B1=1 timeout ${VLIMIT:-120} python3 .devcarry/decode_ab.py auto 2>&1 \
    | grep -E "^\| auto|Error" | head -3 | sed "s/^/$v: /" | tee -a /tmp/sweep.txt
  echo "variant $v took $(( $(date +%s) - t0 )) s"
done
t0=$(date +%s)
XLA_FLAGS="--xla_dump_to=/tmp/dg --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*generate.*" timeout ${PLIMIT:-170} \
  python3 benchmarks/profile_kernels.py --out $OUT --only sample_b64 --top 80 --tag h100 2>&1 | grep -E "PROFILE|Error" | cut -c1-400
(cd /tmp/dg && tar czf $OUT/hlo_sample.tgz $(ls | grep -E "after_optimizations.txt$" | head -4))
echo "trace took $(( $(date +%s) - t0 )) s"
cp /tmp/sweep.txt $OUT/sweep.txt
cat /tmp/sweep.txt
