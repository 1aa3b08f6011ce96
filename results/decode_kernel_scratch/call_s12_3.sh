#!/bin/bash
# Session 12, call 3: the b8 bridge step's per-kernel profile with its optimized HLO (where its ~17 ms above the
# matmul floor go).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
XLA_FLAGS="--xla_dump_to=/tmp/dg --xla_dump_hlo_as_text" timeout 300 python3 benchmarks/profile_kernels.py \
  --out $OUT --only step_b8 --top 60 > $OUT/profile_b8.log 2>&1
tail -5 $OUT/profile_b8.log
ls /tmp/dg | grep -c txt; (cd /tmp/dg && tar czf $OUT/hlo_b8.tgz $(ls | grep after_optimizations.txt | grep -v -i "copy\|convert" | head -50))
ls -la $OUT
