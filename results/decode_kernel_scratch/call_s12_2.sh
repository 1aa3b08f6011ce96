#!/bin/bash
# Session 12, call 2 (same warm machine): the suite's LoRA part against call 1's reference run (copy its hf_anchor.json
# to .devcarry/hf_anchor_s12.json): per-layer no-remat on the separate and on the fused base, and `lean`.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
LATENTJAX_SUITE_LORA=none:layers=flat,none:layers=flat:base=fused,lean LATENTJAX_SUITE_LIMIT_LORA_CASE=140 LATENTJAX_SUITE_LIMIT_LORA=450 \
  python3 benchmarks/suite.py --out $OUT --parts lora --anchor .devcarry/hf_anchor_s12.json > $OUT/suite_lora.log 2>&1
grep -A40 "^| figure" $OUT/suite_lora.log || tail -30 $OUT/suite_lora.log
