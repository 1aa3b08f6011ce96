#!/bin/bash
# Session 9, the last device call: the kernel's GPU test, the small-batch decode A/B under the new "auto", then the
# suite's decode part (b1 ms/token and prefill with the new default).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
python3 -m pytest -q -p no:cacheprovider tests/test_decode_attention.py -k gpu 2>&1 | tail -1
timeout 200 python3 .devcarry/decode_small_batch.py 2>&1 | grep -E "^\||^\{|Error" | tail -12
echo "A/B took $(( $(date +%s) - t0 )) s"
timeout 120 python3 benchmarks/suite.py --out $OUT --parts decode 2>&1 | grep -E "decode_B1|prefill" | tail -4
echo "all took $(( $(date +%s) - t0 )) s"
