#!/bin/bash
# Session 11: XLA flag variants on the per-layer no-remat LoRA step, one process each.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for v in "base=" "cublaslt=--xla_gpu_enable_cublaslt=true" "tritonany=--xla_gpu_triton_gemm_any=true" "base2="; do
  name=${v%%=*}; flags=${v#*=}
  echo "== $name $flags"
  XLA_FLAGS="$flags" timeout 150 python3 benchmarks/lora_8b.py --one none:auto:layers=flat 2>&1 | grep RESULT \
    | python3 -c "import sys,json; d=json.loads(sys.stdin.read().split('RESULT',1)[1]); print('$name', round(d['step_ms'],1), round(d['peak_device_gib'],2), d['loss'])" | tee -a $OUT/lora_flags.txt
done
