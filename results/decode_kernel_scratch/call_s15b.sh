#!/bin/bash
# Next session, second call (~3 min warm): the Pallas decode kernel alone under its launch options (slot block,
# warps, stages) against XLA's attention at the b64 sample's and b1's shapes (benchmarks/decode_kernel_sweep.py).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 benchmarks/decode_kernel_sweep.py --out $OUT --cases b64_sample,b1_long > $OUT/sweep.log 2>&1
echo "sweep rc $?"; grep -A40 "^| case" $OUT/sweep.log || tail -20 $OUT/sweep.log
