#!/bin/bash
# Session 8, one device call: the decode-kernel A/B (auto vs pallas, b64 sample and b1 decode), then the suite's
# pair part beside the reference with AUTO_DECODE_KERNEL set when the kernel won.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
timeout ${AB_LIMIT:-210} python3 .devcarry/decode_ab.py ${AB_ORDER:-auto,pallas} 2>&1 | grep -v -i warn | tail -12
echo "A/B took $(( $(date +%s) - t0 )) s"
if [ -f /tmp/adopt_pallas ]; then sed -i 's/^AUTO_DECODE_KERNEL = False/AUTO_DECODE_KERNEL = True/' latentjax/models/decoder.py; fi
grep -n "^AUTO_DECODE_KERNEL" latentjax/models/decoder.py
LATENTJAX_SUITE_LIMIT_PAIR=${PAIR_LIMIT:-230} python3 benchmarks/suite.py --out $OUT --parts ${PARTS:-pair} \
  --reference .devcarry/hf_reference.py 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -40
echo "all took $(( $(date +%s) - t0 )) s"
