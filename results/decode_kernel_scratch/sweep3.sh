#!/bin/bash
# Session 10: XLA GPU flags on the b64 sample (session 9's profile: split-K partials on the narrow projections, GEMMs
# below the copy bandwidth), one process per variant, the default first and last.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
declare -A F=(
  [base]=""
  [nosplitk]="--xla_gpu_experimental_force_split_k=1"
  [tma]="--xla_gpu_experimental_enable_triton_tma=true"
  [tma_ws]="--xla_gpu_experimental_enable_triton_tma=true --xla_gpu_experimental_enable_triton_warp_specialization=true"
  [dynsearch]="--xla_gpu_experimental_enable_dynamic_dot_search_space=true"
  [nocmdbuf]="--xla_gpu_enable_command_buffer="
)
for v in ${VARIANTS:-base nosplitk tma tma_ws dynsearch base}; do
  if [ "$MODE" = lora ]; then  # the per-layer no-remat LoRA step (the suite's fastest), one process per variant
    XLA_FLAGS="${F[$v]}" timeout 150 python3 benchmarks/lora_8b.py --one none:auto:layers=flat > /tmp/log_$v 2>&1
    echo "lora $v: $(grep RESULT /tmp/log_$v | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()[7:]); print(round(r["step_ms"],1), "ms", round(r["peak_device_gib"],1), "GiB")' 2>/dev/null) $(grep -m1 -iE 'unknown|fatal|error' /tmp/log_$v | cut -c1-200)"
    cp /tmp/log_$v ${OUT:-/tmp}/sweep3_lora_$v.log
    continue
  fi
  XLA_FLAGS="${F[$v]}" AB_SKIP_B1=1 timeout 120 python3 .devcarry/decode_ab.py auto > /tmp/log_$v 2>&1
  echo "$v: $(grep -E '^\| auto' /tmp/log_$v | cut -d'|' -f3,4) $(grep -m1 -iE 'unknown|fatal|error' /tmp/log_$v | cut -c1-200)"
  cp /tmp/log_$v ${OUT:-/tmp}/sweep3_$v.log
done
echo "sweep took $(( $(date +%s) - t0 )) s"
