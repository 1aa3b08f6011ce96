#!/bin/bash
# Session 9, the last device call: the kernel's GPU test, the small-batch decode A/B under the new "auto", then the
# b64 sample without split-K GEMMs beside the default.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
[ -z "$SKIP_TEST" ] && python3 -m pytest -q -p no:cacheprovider tests/test_decode_attention.py -k gpu 2>&1 | tail -1
timeout 200 python3 .devcarry/decode_small_batch.py 2>&1 | grep -E "^\||^\{|Error" | tail -12
echo "A/B took $(( $(date +%s) - t0 )) s"
# the b64 sample with split-K left out of the GEMM autotuning (session 9's profile: the o, down and qkv projections
# write f32 split-K partials, 4-8x their output, that the next fusion sums), beside the default, one process each
for v in base nosplitk base; do
  f=""; [ $v = nosplitk ] && f="--xla_gpu_enable_split_k_autotuning=false"
  XLA_FLAGS="$f" AB_SKIP_B1=1 timeout 100 python3 .devcarry/decode_ab.py auto 2>&1 | grep -E "^\| auto|Error" | sed "s/^/$v: /"
done
echo "all took $(( $(date +%s) - t0 )) s"
