# Source me (bash): XLA flags for multi-GPU JAX training on H100-class GPUs, from the recipes of the JAX LLM
# stacks (shared/spec/jax_practice.md). Flags change between XLA versions and an unknown flag aborts start-up:
# measure each on your jax version, and set LATENTJAX_XLA_FLAGS=none to skip them all.
#   LATENTJAX_TENSOR_PARALLEL=1   also enable collective matmul (overlaps tensor-parallel all-gathers with GEMMs)
if [[ "${LATENTJAX_XLA_FLAGS:-}" != "none" && "${XLA_FLAGS:-}" != *xla_gpu_enable_latency_hiding_scheduler* ]]; then
  _lj_flags=(
    --xla_gpu_enable_latency_hiding_scheduler=true      # overlap collectives with compute
    --xla_gpu_enable_triton_gemm=false                  # cuBLAS GEMMs
    --xla_gpu_all_reduce_combine_threshold_bytes=134217728
    --xla_gpu_all_gather_combine_threshold_bytes=134217728
    --xla_gpu_reduce_scatter_combine_threshold_bytes=67108864
    --xla_gpu_enable_pipelined_all_gather=true          # FSDP: prefetch the next layer's weights in the scan
    --xla_gpu_enable_pipelined_reduce_scatter=true
    --xla_gpu_enable_pipelined_all_reduce=true
    --xla_gpu_enable_while_loop_double_buffering=true
  )
  if [[ "${LATENTJAX_TENSOR_PARALLEL:-0}" == "1" ]]; then
    _lj_flags+=(--xla_gpu_multi_streamed_windowed_einsum=true)
  fi
  export XLA_FLAGS="${_lj_flags[*]}${XLA_FLAGS:+ $XLA_FLAGS}"
  unset _lj_flags
fi
# Let JAX take most of the GPU memory up front (default 0.75).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
