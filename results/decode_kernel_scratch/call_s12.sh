#!/bin/bash
# Next session's first H100 call (~5.5 min warm): the training loop's step rate beside the synchronised median for
# the per-layer no-remat LoRA step (default; with XLA's dot merger allowed to merge q/k/v and gate/up; on a fused
# base, one q/k/v and one gate/up matmul per layer), then the bridge steps; compared with session 11's reference run (copy results/h100_2026-12-07_session11/hf_anchor.json
# to .devcarry/hf_anchor_s11.json first) unless REF=1 runs the reference beside them. Every log is kept in $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
show() { grep RESULT "$1" | tail -1 | python3 -c "import sys,json; d=json.loads(sys.stdin.read()[7:]); print('$2', 'step', round(d['step_ms'],1), 'loop', round(d['loop_step_ms'],1), 'GiB', round(d['peak_device_gib'],2))" || tail -3 "$1"; }
timeout 150 python3 benchmarks/lora_8b.py --one none:auto:layers=flat > $OUT/lora_flat.log 2>&1; show $OUT/lora_flat.log default
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=1024 timeout 150 python3 benchmarks/lora_8b.py --one none:auto:layers=flat \
  > $OUT/lora_flat_merger.log 2>&1; show $OUT/lora_flat_merger.log merger
timeout 150 python3 benchmarks/lora_8b.py --one none:auto:layers=flat:base=fused > $OUT/lora_flat_fused.log 2>&1
show $OUT/lora_flat_fused.log fused_base
if [ "$REF" = 1 ]; then ref="--reference .devcarry/hf_reference.py"; else ref="--anchor .devcarry/hf_anchor_s11.json"; fi
LATENTJAX_SUITE_LIMIT_STEPS=200 python3 benchmarks/suite.py --out $OUT --parts steps $ref > $OUT/steps.log 2>&1
grep -E "bridge_step|error" $OUT/steps.log
