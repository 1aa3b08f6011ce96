#!/bin/bash
# Session 14, second call (~4 min warm): the b8 bridge step on folded models with command buffers (today's
# defaults), with the receiver's 48-token attention by XLA's implementation instead of cuDNN's (xla64: no cuDNN
# memsets there), and with all attention by XLA's (xlaall); the default again for drift.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python3 benchmarks/step_options.py --out $OUT --batches 8 --variants '' --folded_variants default,xla64,xlaall,default > $OUT/step_options.log 2>&1; echo rc $?
grep -A12 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
