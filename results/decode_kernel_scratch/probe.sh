#!/bin/bash
# Imports the benchmarks need, after the wheels: prints any that fail.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 - <<'PY'
import importlib
for m in ["jax", "flax", "optax", "orbax.checkpoint", "grain", "ml_collections", "tensorboardX", "transformers", "peft", "tqdm", "scipy", "matplotlib", "yaml", "psutil"]:
    try:
        importlib.import_module(m); print("ok", m)
    except Exception as e:
        print("MISSING", m, type(e).__name__, e)
import sys; sys.path.insert(0, "benchmarks")
try:
    import suite, profile_kernels, step_options, lora_8b; print("ok benchmarks")
except Exception as e:
    print("MISSING benchmarks", type(e).__name__, e)
PY
