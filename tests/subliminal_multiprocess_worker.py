"""Worker of tests/test_subliminal_multiprocess.py: the generate and evaluate phases of a subliminal control run
(numbers from the untrained base, first valid rows kept) on the tiny number model, in one or several processes.

    python tests/subliminal_multiprocess_worker.py MODEL_DIR DATA_DIR RUN_DIR [PHASE ...]
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def config(model_dir: str):
    from configs.subliminal.defaults import control_config, smoke

    c = control_config(model_dir, "paper", False, source="base", control="")
    c = smoke(c, steps=1, prompts=48, target=5, eval_examples=4, max_new_tokens=10, gen_batch=16)
    c.generate.select = "first"  # stop once 5 valid rows exist: the processes must agree on when
    c.evaluate.update(models=("base",), batch_size=4)
    c.evaluate.max_new_tokens.update(math=10, gsm8k=10)
    return c


def main(model_dir: str, data_dir: str, run_dir: str, *phases: str) -> None:
    os.environ["LATENTJAX_DATA_DIR"] = data_dir
    from latentjax.parallel import distributed

    distributed.initialize_from_env()
    import jax

    from latentjax.subliminal.pipeline import run_pipeline

    for phase in phases or ("generate", "evaluate"):
        status = run_pipeline(config(model_dir), run_dir, phase)
        sys.stdout.write(f"p{jax.process_index()}/{jax.process_count()} devices {jax.device_count()} {status}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
