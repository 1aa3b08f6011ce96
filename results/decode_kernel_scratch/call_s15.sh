#!/bin/bash
# Next session, first call: the suite's pair part beside the reference with session 14's changes
# (the Pallas decode kernel at b64; decode loops of known length when there are no stop tokens, so no predicate is
# read back to the host per step: the b64 sample, b1 decode and the relay), the known-length loop against the
# per-step predicate in one process (decode_ab3.py; ~8 min warm). The kernel's launch options: call_s15b.sh.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
LATENTJAX_SUITE_LIMIT_PAIR=330 timeout 420 python3 benchmarks/suite.py --out $OUT --parts pair --reference .devcarry/hf_reference.py \
  > $OUT/suite_pair.log 2>&1
grep -A32 "^| figure" $OUT/suite_pair.log || tail -30 $OUT/suite_pair.log
timeout 150 python3 .devcarry/decode_ab3.py > $OUT/decode_ab3.log 2>&1; echo "known-length A/B rc $?"
grep -A6 "^| run" $OUT/decode_ab3.log || tail -20 $OUT/decode_ab3.log
