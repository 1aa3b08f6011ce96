"""Scratch A/B: LoRA with the scale on the rank-r activations (x A s) B instead of on the output ((x A) B) s."""
import os, runpy, sys
sys.path.insert(0, os.getcwd())
import jax.numpy as jnp
from flax import linen as nn
from latentjax.lora import adapter as ad

def _interceptor(lora_cfg, deterministic):
    scale = lora_cfg.scale
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or not isinstance(module, nn.Dense)
                or not module.has_variable(ad.LORA_COLLECTION, "lora_A")):
            return next_fun(*args, **kwargs)
        x = args[0] if args else kwargs["inputs"]
        y = next_fun(*args, **kwargs)
        a = module.get_variable(ad.LORA_COLLECTION, "lora_A")
        b = module.get_variable(ad.LORA_COLLECTION, "lora_B")
        dtype = module.dtype or x.dtype
        h = jnp.dot(x.astype(dtype), a.astype(dtype)) * jnp.asarray(scale, dtype)
        return y + jnp.dot(h, b.astype(dtype)).astype(y.dtype)
    return intercept

if os.environ.get("LORA_SCALE_H") == "1":
    ad._interceptor = _interceptor
sys.argv = ["lora_8b.py"] + sys.argv[1:]
runpy.run_path("benchmarks/lora_8b.py", run_name="__main__")
