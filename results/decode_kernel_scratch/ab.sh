#!/bin/bash
# Session 7/8: the Pallas decode kernel against XLA's decode attention, same process.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s); AB_SKIP_B1=${AB_SKIP_B1:-} timeout ${AB_LIMIT:-230} python3 .devcarry/decode_ab.py ${AB_ORDER:-auto,pallas,pallas1} 2>&1 | grep -v -i warn | tail -30
echo "A/B took $(( $(date +%s) - t0 )) s"
