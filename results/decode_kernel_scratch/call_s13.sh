#!/bin/bash
# Next session's first H100 call (~6 min warm): the b8 bridge step with and without XLA's command buffers,
# synchronised and at the loop rate (session 12's b8 profile: 9.5 ms of dispatch gaps in a 52.4-ms span); then the
# per-layer LoRA case's wall time with the stacked-then-split random init (session 12: ~146 s, ~105 s before compile).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python3 benchmarks/step_options.py --out $OUT --batches 8 > $OUT/step_options.log 2>&1; echo rc $?
grep -A8 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
s=$(date +%s); timeout 200 python3 benchmarks/lora_8b.py --one none:auto:layers=flat > $OUT/lora_flat.log 2>&1
echo "lora flat rc $? wall $(( $(date +%s)-s ))s"; grep RESULT $OUT/lora_flat.log | cut -c1-420
