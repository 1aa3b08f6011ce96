"""Scratch (session 8): the decode kernel compiled by Triton on the GPU against float32 attention, beside XLA's bf16
attention, at the decode shapes of the 8B models (32 heads, 8 kv heads, head_dim 128)."""
import json, os
import jax, jax.numpy as jnp, numpy as np
from latentjax.models.decode_attention import decode_attention

jax.config.update("jax_default_matmul_precision", "highest")  # the float32 reference without TF32

rows = []
for batch, slots, filled, splits in [(1, 257, 200, None), (1, 257, 200, 1), (8, 192, 150, None), (64, 128, 100, None),
                                     (64, 130, 130, None), (2, 4096, 3001, None)]:
    rs = np.random.RandomState(batch + slots)
    q = rs.randn(batch, 1, 32, 128).astype(np.float32)
    k = rs.randn(batch, slots, 8, 128).astype(np.float32) * 2
    v = rs.randn(batch, slots, 8, 128).astype(np.float32)
    allowed = np.zeros((batch, slots), bool)
    for b in range(batch):
        allowed[b, rs.randint(0, filled // 2):filled] = True
    allowed[0, :filled] = rs.rand(filled) < 0.5
    allowed[0, filled - 1] = True
    m = jnp.asarray(allowed)
    exact = np.asarray(jax.nn.dot_product_attention(*(jnp.asarray(a) for a in (q, k, v)), mask=m[:, None, None, :]))
    h = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    kk, vv = np.asarray(h[1], np.float32), np.asarray(h[2], np.float32)
    kk[:, filled:], vv[:, filled:] = np.nan, np.nan  # empty slots must never be read
    ours = np.asarray(decode_attention(h[0], jnp.asarray(kk, jnp.bfloat16), jnp.asarray(vv, jnp.bfloat16), m, filled,
                                       splits=splits), np.float32)
    xla = np.asarray(jax.nn.dot_product_attention(*h, mask=m[:, None, None, :], implementation="xla"), np.float32)
    err = lambda a: float(np.max(np.abs(a - exact)) / np.max(np.abs(exact)))  # noqa: E731
    rows.append(dict(batch=batch, slots=slots, filled=filled, splits=splits, kernel_err=err(ours), xla_err=err(xla),
                     finite=bool(np.isfinite(ours).all())))
    print(json.dumps(rows[-1]), flush=True)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "."), "gpu_check.json"), "w"), indent=1)
print("| batch | slots | filled | splits | kernel rel err | xla bf16 rel err | finite |\n|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['batch']} | {r['slots']} | {r['filled']} | {r['splits']} | {r['kernel_err']:.2e} | {r['xla_err']:.2e} | {r['finite']} |")
