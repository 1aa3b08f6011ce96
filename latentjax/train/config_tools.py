"""Config helpers: load a `configs/*.py` file, refuse mistyped `--config.a.b=v` overrides, save the resolved config.

A config file defines `get_config(arg=None) -> ConfigDict`; `path:arg` passes `arg` (big_vision style variants).
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import os
import sys
from typing import Any, Optional, Sequence

from ml_collections import ConfigDict


class ConfigOverrideError(KeyError):
    """An override names a config key that does not exist."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def repo_root_of(path: str) -> Optional[str]:
    """The nearest parent folder of `path` that holds a `configs/` package next to `latentjax/` (or None)."""
    d = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.isdir(os.path.join(d, "configs")) and os.path.isdir(os.path.join(d, "latentjax")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def load_config(spec: str) -> ConfigDict:
    """Load `path/to/config.py` or `path/to/config.py:arg` the way `--config=` does."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist.")
    root = repo_root_of(path)
    if root and root not in sys.path:
        sys.path.insert(0, root)  # so config files can `from configs import base`
    name = "_latentjax_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def flat_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) ConfigDict, inner nodes included."""
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, (ConfigDict, dict)):
            keys.extend(flat_keys(value, full + "."))
    return keys


def check_key(config: ConfigDict, dotted: str) -> None:
    """Raise ConfigOverrideError naming the nearest real key if `dotted` is not a key of `config`."""
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, (ConfigDict, dict)) and part in node:
            node = node[part]
            continue
        known = flat_keys(config)
        close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]!r}?"
        else:
            parent = dotted.rpartition(".")[0]
            siblings = [k for k in known if k.rpartition(".")[0] == parent]
            hint = f"keys at that level: {', '.join(siblings)}." if siblings else "no similar key exists."
        raise ConfigOverrideError(f"Unknown config key {dotted!r} in override --config.{dotted}; {hint}")


def override_keys(argv: Sequence[str], flag: str = "config") -> list[str]:
    """The dotted keys of every `--config.a.b=v` (or `--config.a.b v`) in argv."""
    keys = []
    prefixes = (f"--{flag}.", f"-{flag}.")
    for arg in argv:
        for prefix in prefixes:
            if arg.startswith(prefix):
                keys.append(arg[len(prefix):].split("=", 1)[0])
                break
    return keys


def config_spec_from_argv(argv: Sequence[str], flag: str = "config") -> Optional[str]:
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
        if arg == f"--{flag}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_overrides(argv: Sequence[str], config: ConfigDict, flag: str = "config") -> None:
    """Fail at once (before anything heavy runs) on an override whose key is not in `config`."""
    for key in override_keys(argv, flag):
        check_key(config, key)


def parse_flags_checking_overrides(argv: list[str]) -> list[str]:
    """absl `flags_parser` for launchers: refuse a mistyped `--config.a.b` override (exit 2, naming the nearest
    real key) before absl parses anything or any work starts."""
    from absl import app

    spec = config_spec_from_argv(argv[1:])
    if spec:
        try:
            check_overrides(argv[1:], load_config(spec))
        except (ConfigOverrideError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return app.parse_flags_with_usage(argv)


def to_jsonable(config: ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def save_config(config: ConfigDict, workdir: str, name: str = "config.json") -> str:
    """Write the resolved config as JSON into `workdir`; returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        json.dump(to_jsonable(config), f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def lookup(config: ConfigDict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, (ConfigDict, dict)) or part not in node:
            return default
        node = node[part]
    return node

