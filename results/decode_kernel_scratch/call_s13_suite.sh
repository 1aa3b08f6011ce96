#!/bin/bash
# Session 13, call 2 (same as call_s12_1.sh): the suite's pair part (bridge steps with their loop rates, request, relay, b64 sample, decode,
# prefill) beside the PyTorch reference on the same GPU. Every log is kept in $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
LATENTJAX_SUITE_LIMIT_PAIR=330 python3 benchmarks/suite.py --out $OUT --parts pair --reference .devcarry/hf_reference.py \
  > $OUT/suite_pair.log 2>&1
grep -A40 "^| figure" $OUT/suite_pair.log || tail -30 $OUT/suite_pair.log
