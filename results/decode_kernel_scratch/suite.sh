#!/bin/bash
# Session 7: the suite beside the reference (pair and LoRA parts).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -f /tmp/adopt_pallas ]; then sed -i 's/^AUTO_DECODE_KERNEL_BELOW = .*/AUTO_DECODE_KERNEL_BELOW = 1 << 30/' latentjax/models/decoder.py; fi
grep -n "^AUTO_DECODE_KERNEL" latentjax/models/decoder.py
LATENTJAX_SUITE_LIMIT_PAIR=330 LATENTJAX_SUITE_LIMIT_LORA=200 python3 benchmarks/suite.py --out $OUT --parts pair,lora \
  --reference .devcarry/hf_reference.py 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -60
