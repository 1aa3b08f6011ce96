#!/bin/bash
# Session 11, last call: the training loop's step rate (steps back to back, one sync) beside the synchronised median:
# the per-layer no-remat LoRA step, then the bridge steps (compared with call 1's reference run).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 110 python3 benchmarks/lora_8b.py --one none:auto:layers=flat > $OUT/lora_flat.log 2>&1
grep RESULT $OUT/lora_flat.log | python3 -c "import sys,json; d=json.loads(sys.stdin.read()[7:]); print('lora flat', round(d['step_ms'],1), round(d['loop_step_ms'],1), round(d['peak_device_gib'],2))"
LATENTJAX_SUITE_LIMIT_STEPS=150 python3 benchmarks/suite.py --out $OUT --parts steps --anchor .devcarry/hf_anchor_s11.json 2>&1 | grep -E "bridge_step|error"
