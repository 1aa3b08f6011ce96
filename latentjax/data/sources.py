"""Known datasets, read through Hugging Face `datasets` from local JSON Lines when present, else from the hub.

`load_split("sst2", "validation")` reads `<data_dir>/sst2/validation.jsonl` with
`datasets.load_dataset("json", data_files=...)` when that file exists (no network), and otherwise the same split
from the hub (`nyu-mll/glue`, config `sst2`). `data_dir` defaults to `find_data_dir()`: `$LATENTJAX_DATA_DIR`, or a
`shared/data` folder beside the checkout (`<repo>/../shared/data`, `<repo>/shared/data`, or the same two relative to
the working directory). Any local file path (`.jsonl`, `.json`, `.parquet`, `.csv`) is accepted in place of a name.

Local files and hub rows have the same fields and order (see `shared/data/README.md`), with two documented
differences: AG News' local `train` is `train_sample.jsonl` (8,794 rows of the 120,000), and the local MATH rows
carry an extra `answer` field (the last `\\boxed{}`), banking77 an extra `label_name`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import datasets

ENV_VAR = "LATENTJAX_DATA_DIR"
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class UnknownDataError(KeyError):
    """An unknown dataset name or split; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Split:
    file: str                          # file name inside the dataset's local folder
    hub_split: str                     # split name on the hub
    hub_configs: tuple = (None,)       # hub configs whose splits are concatenated in this order


@dataclasses.dataclass(frozen=True)
class Source:
    hub_path: str
    folder: str
    splits: dict
    # Label names in id order: a tuple, the name of a JSON list file in `folder`, or None (no class labels).
    labels: Union[tuple, str, None] = None


_MMLU_MATH = ("abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
              "high_school_statistics")
_MMLU_EXTRA = ("econometrics", "formal_logic")

SOURCES: dict[str, Source] = {
    "sst2": Source("nyu-mll/glue", "sst2", {
        "train": Split("train.jsonl", "train", ("sst2",)),
        "validation": Split("validation.jsonl", "validation", ("sst2",))}, labels=("negative", "positive")),
    "ag_news": Source("fancyzhx/ag_news", "ag_news", {
        "train": Split("train_sample.jsonl", "train"),  # local: 8,794-row sample of the official train split
        "test": Split("test.jsonl", "test")}, labels=("World", "Sports", "Business", "Sci/Tech")),
    "banking77": Source("PolyAI/banking77", "banking77", {
        "train": Split("train.jsonl", "train"), "test": Split("test.jsonl", "test")}, labels="labels.json"),
    "gsm8k": Source("openai/gsm8k", "gsm8k", {
        "train": Split("train.jsonl", "train", ("main",)), "test": Split("test.jsonl", "test", ("main",))}),
    "math": Source("hendrycks/competition_math", "math", {
        "train": Split("train.jsonl", "train"), "test": Split("test.jsonl", "test")}),
    "math500": Source("HuggingFaceH4/MATH-500", "math500", {"test": Split("test.jsonl", "test")}),
    "mmlu_math": Source("cais/mmlu", "mmlu_math", {
        "test": Split("test.jsonl", "test", _MMLU_MATH), "test_extra": Split("test_extra.jsonl", "test", _MMLU_EXTRA),
        "dev": Split("dev.jsonl", "dev", _MMLU_MATH), "dev_extra": Split("dev_extra.jsonl", "dev", _MMLU_EXTRA)},
        labels=("A", "B", "C", "D")),
}


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_data_dir() -> Optional[str]:
    """`$LATENTJAX_DATA_DIR` if set (returned even if missing, so errors name it), else the first existing
    `shared/data` beside the checkout or the working directory; None when there is none."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    for base in (_repo_root(), os.getcwd()):
        for rel in (os.path.join("..", "shared", "data"), os.path.join("shared", "data")):
            path = os.path.normpath(os.path.join(base, rel))
            if os.path.isdir(path):
                return path
    return None


def known() -> dict[str, tuple[str, ...]]:
    """Registered dataset names -> their split names."""
    return {name: tuple(src.splits) for name, src in SOURCES.items()}


def _listing() -> str:
    return "; ".join(f"{n}: {', '.join(s)}" for n, s in known().items())


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise UnknownDataError(f"Unknown dataset {name!r}. Known datasets and splits: {_listing()}. "
                               "A path to a .jsonl/.json/.parquet/.csv file is also accepted.")
    return SOURCES[name]


def _lookup(name: str, split: Optional[str]) -> tuple[Source, Split]:
    src = _source(name)
    if split not in src.splits:
        raise UnknownDataError(f"Unknown split {split!r} of {name!r}; it has: {', '.join(src.splits)}. "
                               f"Known datasets and splits: {_listing()}.")
    return src, src.splits[split]


def _is_offline() -> bool:
    import datasets  # imported where data is read: models, benchmarks and inference never need it

    return bool(datasets.config.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE)


def load_file(path: str, split: str = "train") -> datasets.Dataset:
    """Read one local .jsonl/.json/.parquet/.csv file as a `datasets.Dataset` (no network)."""
    import datasets

    ext = os.path.splitext(path)[1].lower()
    if ext not in _FILE_BUILDERS:
        raise ValueError(f"Cannot read {path!r}: expected one of {', '.join(_FILE_BUILDERS)}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such data file: {path}")
    return datasets.load_dataset(_FILE_BUILDERS[ext], data_files={split: path}, split=split)


def local_path(name: str, split: str, data_dir: Optional[str] = None) -> Optional[str]:
    """Where the local file of a registered split would be (None when no data dir is known)."""
    src, sp = _lookup(name, split)
    data_dir = data_dir or find_data_dir()
    return None if data_dir is None else os.path.join(data_dir, src.folder, sp.file)


def load_split(name: str, split: Optional[str] = None, data_dir: Optional[str] = None) -> datasets.Dataset:
    """A registered split (local file first, else the hub), or a local file path (`split` then only names it).

    Raises UnknownDataError (a KeyError) for an unknown name or split, listing the known ones, and
    FileNotFoundError when the local file is absent and the hub cannot be used (offline, or the download failed).
    """
    if os.path.splitext(name)[1].lower() in _FILE_BUILDERS or os.path.sep in name:
        return load_file(name, split or "train")
    src, sp = _lookup(name, split)
    path = local_path(name, split, data_dir)
    if path is not None and os.path.isfile(path):
        return load_file(path, split)
    where = (f"{path} does not exist" if path else
             f"no data dir was given or found (set ${ENV_VAR} or put shared/data beside the checkout)")
    hub = f"{src.hub_path} ({', '.join(c or 'default' for c in sp.hub_configs)}, split {sp.hub_split!r})"
    if _is_offline():
        raise FileNotFoundError(f"{name}/{split}: {where}, and the hub is disabled (HF_HUB_OFFLINE / "
                                f"HF_DATASETS_OFFLINE), so {hub} cannot be read.")
    import datasets

    try:
        parts = [datasets.load_dataset(src.hub_path, c, split=sp.hub_split) for c in sp.hub_configs]
    except Exception as e:  # network, auth, or a dataset removed from the hub
        raise FileNotFoundError(f"{name}/{split}: {where}, and reading {hub} from the hub failed: {e}") from e
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def label_names(name: str, data_dir: Optional[str] = None) -> Optional[list[str]]:
    """Class names in label-id order (HF ClassLabel order), or None for datasets without class labels.
    Banking77's come from its local `labels.json`, else from the hub's features."""
    src = _source(name)
    if src.labels is None or isinstance(src.labels, tuple):
        return None if src.labels is None else list(src.labels)
    data_dir = data_dir or find_data_dir()
    path = os.path.join(data_dir, src.folder, src.labels) if data_dir else None
    if path and os.path.isfile(path):
        with open(path) as f:
            return list(json.load(f))
    split = next(iter(src.splits))
    return list(load_split(name, split, data_dir).features["label"].names)


__all__ = ["SOURCES", "Source", "Split", "UnknownDataError", "find_data_dir", "known", "label_names",
           "load_file", "load_split", "local_path"]
