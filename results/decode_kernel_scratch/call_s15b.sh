#!/bin/bash
# Next session, second call (~5 min warm): the decode kernel's GPU tests (Triton's lowering, the masked-rows form
# included), the kernel alone under its launch options (slot block, warps, stages, masked rows) against XLA's
# attention at the b64 sample's and b1's shapes, then the b64 sample with masked rows against the padded form.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_decode_attention.py -k compiled 2>&1 | tail -3
timeout 200 python3 benchmarks/decode_kernel_sweep.py --out $OUT --cases b64_sample,b1_long --stages 2,3 > $OUT/sweep.log 2>&1
echo "sweep rc $?"; grep -A60 "^| case" $OUT/sweep.log || tail -20 $OUT/sweep.log
timeout 150 python3 .devcarry/decode_ab4.py > $OUT/decode_ab4.log 2>&1; echo "masked A/B rc $?"
grep -A6 "^| run" $OUT/decode_ab4.log || tail -20 $OUT/decode_ab4.log
