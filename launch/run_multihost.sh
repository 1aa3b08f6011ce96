#!/bin/bash
# Start one latentjax process on this host, for schedulers other than SLURM (run it once on every host).
#
#   COORDINATOR=host0:12321 NUM_PROCESSES=4 PROCESS_ID=$i launch/run_multihost.sh launch/train.py --config=...
#
# Also understood, as set by Kubernetes/PyTorch-style launchers: MASTER_ADDR, MASTER_PORT, WORLD_SIZE (or
# NNODES) and RANK (or NODE_RANK). One process per host drives all of that host's GPUs; set
# LATENTJAX_LOCAL_DEVICE_IDS (e.g. "0,1,2,3") to give a process a subset. The entry point must call
# latentjax.parallel.distributed.initialize_from_env(). With none of these variables it runs a single process.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
  echo "usage: COORDINATOR=host:port NUM_PROCESSES=N PROCESS_ID=i $0 ENTRY.py [args...]" >&2
  exit 2
fi

coordinator="${COORDINATOR:-${LATENTJAX_COORDINATOR:-}}"
if [[ -z "$coordinator" && -n "${MASTER_ADDR:-}" ]]; then
  coordinator="${MASTER_ADDR}:${MASTER_PORT:-12321}"
fi
num="${NUM_PROCESSES:-${LATENTJAX_NUM_PROCESSES:-${WORLD_SIZE:-${NNODES:-}}}}"
pid="${PROCESS_ID:-${LATENTJAX_PROCESS_ID:-${RANK:-${NODE_RANK:-}}}}"
if [[ -n "$coordinator$num$pid" ]]; then
  if [[ -z "$coordinator" || -z "$num" || -z "$pid" ]]; then
    echo "$0: set all of COORDINATOR (host:port), NUM_PROCESSES and PROCESS_ID (got '$coordinator' '$num' '$pid')" >&2
    exit 2
  fi
  export LATENTJAX_COORDINATOR="$coordinator" LATENTJAX_NUM_PROCESSES="$num" LATENTJAX_PROCESS_ID="$pid"
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  source launch/xla_gpu_flags.sh
fi
export PYTHONUNBUFFERED=1
exec "${LATENTJAX_PYTHON:-python}" -u "$@"
