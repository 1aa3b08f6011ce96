#!/bin/bash
# Next session's first H100 call (~4 min warm): the bridge steps (b8, b64) with and without XLA's command buffers,
# synchronised and at the loop rate (session 12's b8 profile: 9.5 ms of dispatch gaps in a 52.4-ms span).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 benchmarks/step_options.py --out $OUT > $OUT/step_options.log 2>&1; echo rc $?
grep -A12 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
