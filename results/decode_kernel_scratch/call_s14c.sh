#!/bin/bash
# Ran on commit 8f50d1c (session 14); deferred_norms was reverted after it (da43587).
# Session 14, deferred norms (~5 min warm): the b64 sample and b1 decode with the norms applied before the
# projections (folded) or to their outputs (deferred_norms), alternating in one process; then the b8 bridge step
# on folded and on deferred models (today's command buffers).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 230 python3 .devcarry/decode_ab2.py > $OUT/decode_ab2.log 2>&1; echo "decode rc $?"
grep -A6 "^| run" $OUT/decode_ab2.log || tail -20 $OUT/decode_ab2.log
timeout 250 python3 benchmarks/step_options.py --out $OUT --batches 8 --variants '' --folded_variants default,default --deferred_variants default,default > $OUT/step_options.log 2>&1; echo rc $?
grep -A8 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
