#!/bin/bash
# The b64 sample with the Pallas decode kernel against XLA's attention under today's defaults (split-K off from
# batch 64), twice each, same process (session 9, before split-K off: kernel 526.9 vs 532.0 ms on an H100; session 8
# on an H200: kernel 0.7% slower), so `auto` can take the kernel at b64 if it wins on the issue's card; then the
# per-layer LoRA case's wall time with the stacked-then-split random init (session 12: ~146 s, ~105 s before
# compile). ~5 min warm.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
AB_SKIP_B1=1 timeout 300 python3 .devcarry/decode_ab.py auto,pallas,auto,pallas 2>&1 | grep -E "^\{|^\| |rror"
s=$(date +%s); timeout 200 python3 benchmarks/lora_8b.py --one none:auto:layers=flat > $OUT/lora_flat.log 2>&1
echo "lora flat rc $? wall $(( $(date +%s)-s ))s"; grep RESULT $OUT/lora_flat.log | cut -c1-420
