"""Experiment builders by name: `config.experiment` -> a builder `(config, mesh) -> Experiment`.

Entries are "module:function" strings imported on first use, so the launcher imports only the experiment family it
runs (the bridge does not pull in LoRA code and vice versa). `register(name)(builder)` adds a callable directly,
which is handy in tests.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Union

from jax.sharding import Mesh
from ml_collections import ConfigDict

from latentjax.train.experiment import Experiment

Builder = Callable[[ConfigDict, Mesh], Experiment]

_REGISTRY: dict[str, Union[str, Builder]] = {
    "tiny_lm": "latentjax.train.tiny_lm:build",
    "bridge": "latentjax.bridge.experiment:build",
    "prompt_tuning": "latentjax.bridge.prompt_tuning:build",
    "lora_sft": "latentjax.lora.experiment:build",
    "translator": "latentjax.translator.experiment:build",
}


def register(name: str, target: Union[str, Builder, None] = None):
    """`register("x")(builder)` as a decorator, or `register("x", "pkg.module:build")` for a lazy entry."""
    if target is not None:
        _REGISTRY[name] = target
        return target

    def decorator(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return decorator


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Builder:
    """The builder registered under `name` (importing its module if it is a lazy entry)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"No experiment named {name!r}; registered: {', '.join(names())}.{hint}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        try:
            target = getattr(module, attr)
        except AttributeError as e:
            raise KeyError(f"Experiment {name!r} points at {module_name}:{attr}, which does not exist.") from e
    return target
