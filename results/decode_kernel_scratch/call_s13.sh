#!/bin/bash
# Session 13's first call (~5 min warm): the b8 bridge step with and without XLA's command buffers,
# synchronised and at the loop rate (session 12's b8 profile, re-read in session 13: 42.9 ms busy, 3.7 ms of gaps
# between 2,324 kernels, ~4 ms of host time outside a synchronised step); the b8 step's profile with its trace kept
# (what the 445 memsets and the gaps are); and the step on models with folded norm scales. The per-layer LoRA case's wall time is in call_s13b.sh.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 benchmarks/step_options.py --out $OUT --batches 8 --variants off,default,nocudnn,off --folded_variants off > $OUT/step_options.log 2>&1; echo rc $?
grep -A9 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
timeout 130 python3 benchmarks/profile_kernels.py --out $OUT --only step_b8 --top 80 --keep_traces > $OUT/profile_b8.log 2>&1
echo "profile rc $?"; tail -3 $OUT/profile_b8.log
