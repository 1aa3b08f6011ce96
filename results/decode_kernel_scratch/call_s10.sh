#!/bin/bash
# Session 10: the narrow-projection probe (Pallas GEMM + residual epilogue vs XLA), the small-batch decode A/B, then
# the b64 sample without split-K GEMMs beside the default.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import jax; print('jax', jax.__version__)"
t0=$(date +%s)
if [ "$1" != ab ]; then
timeout 200 python3 .devcarry/linear_probe.py 2>&1 | grep -E "^\||Error|error" | tail -30
PROBE_XLA_ONLY=1 XLA_FLAGS="--xla_gpu_enable_split_k_autotuning=false" timeout 100 python3 .devcarry/linear_probe.py 2>&1 | grep -E "xla dot" | sed "s/^/nosplitk: /"
echo "probe took $(( $(date +%s) - t0 )) s"
exit 0
fi
for v in base nosplitk base; do
  f=""; [ $v = nosplitk ] && f="--xla_gpu_enable_split_k_autotuning=false"
  XLA_FLAGS="$f" AB_SKIP_B1=1 timeout 100 python3 .devcarry/decode_ab.py auto 2>&1 | grep -E "^\| auto|Error" | sed "s/^/$v: /"
done
echo "sample A/B took $(( $(date +%s) - t0 )) s"
timeout 150 python3 .devcarry/decode_small_batch.py 2>&1 | grep -E "^\||^\{|Error" | tail -12
echo "all took $(( $(date +%s) - t0 )) s"
