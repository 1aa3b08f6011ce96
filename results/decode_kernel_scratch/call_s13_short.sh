#!/bin/bash
# Fallback when little device time is left (~3.5 min warm): the b8 step without command buffers, with command
# buffers minus cuDNN, and on models with folded norm scales.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 benchmarks/step_options.py --out $OUT --batches 8 --variants off,nocudnn --folded_variants off > $OUT/step_options.log 2>&1; echo rc $?
grep -A6 "^| variant" $OUT/step_options.log || tail -20 $OUT/step_options.log
