#!/bin/bash
# Session 8, one device call: the kernel's GPU test, the decode-kernel A/B (auto vs pallas, b64 sample and b1 decode), then the suite's
# pair part beside the reference with the kernel at every batch
# (AUTO_DECODE_KERNEL_BELOW raised; session 8's AUTO_DECODE_KERNEL switch before session 9) when it won.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
# the compiled kernel against float32 first (tests/test_decode_attention.py's GPU-only test); no adoption without it
# (pytest, pluggy and iniconfig travel as wheels in .whl)
python3 -m pytest -q -p no:cacheprovider tests/test_decode_attention.py -k gpu 2>&1 | tail -3 | tee /tmp/kernel_check
grep -q "^5 passed" /tmp/kernel_check || touch /tmp/kernel_bad
timeout ${AB_LIMIT:-210} python3 .devcarry/decode_ab.py ${AB_ORDER:-auto,pallas} 2>&1 | grep -v -i warn | tail -12
echo "A/B took $(( $(date +%s) - t0 )) s"
if [ -f /tmp/adopt_pallas ] && [ ! -f /tmp/kernel_bad ]; then sed -i 's/^AUTO_DECODE_KERNEL_BELOW = .*/AUTO_DECODE_KERNEL_BELOW = 1 << 30/' latentjax/models/decoder.py; fi
grep -n "^AUTO_DECODE_KERNEL" latentjax/models/decoder.py
LATENTJAX_SUITE_LIMIT_PAIR=${PAIR_LIMIT:-230} python3 benchmarks/suite.py --out $OUT --parts ${PARTS:-pair} \
  --reference .devcarry/hf_reference.py 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -40
echo "all took $(( $(date +%s) - t0 )) s"
