#!/bin/bash
# Session 11's first H100 call: the b64 sample with generate's wide-batch compile options (no XLA_FLAGS) against the
# same compile without them, each twice, same process; then the suite's pair part beside the reference.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
AB_SKIP_B1=1 timeout 200 python3 .devcarry/decode_ab.py auto,plain,auto,plain 2>&1 | grep -E "^\{|^\| |rror|does not know"
[ "$1" = sample ] && exit 0
LATENTJAX_SUITE_LIMIT_PAIR=330 python3 benchmarks/suite.py --out $OUT --parts pair \
  --reference .devcarry/hf_reference.py 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -40
