#!/bin/bash
# For the next session's first H100 call: the b64 sample under the new wide-batch compile options (no XLA_FLAGS;
# expect ~516-522 ms), then the suite's pair part beside the reference (~5 min on a warm machine).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
AB_SKIP_B1=1 timeout 100 python3 .devcarry/decode_ab.py auto 2>&1 | grep -E "^\| auto|rror|does not know"
[ "$1" = sample ] && exit 0
LATENTJAX_SUITE_LIMIT_PAIR=330 python3 benchmarks/suite.py --out $OUT --parts pair \
  --reference .devcarry/hf_reference.py 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -40
