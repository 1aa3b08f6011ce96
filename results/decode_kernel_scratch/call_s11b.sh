#!/bin/bash
# Session 11's second H100 call (same warm machine as call_s11.sh): the suite's LoRA part, compared with the
# reference run of the first call (its hf_anchor.json copied to .devcarry/hf_anchor_s11.json).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
LATENTJAX_SUITE_LIMIT_LORA=300 python3 benchmarks/suite.py --out $OUT --parts lora \
  --anchor .devcarry/hf_anchor_s11.json 2>&1 | grep -v -E "^\s*$|Warning|warn\(" | tail -30
