"""Evaluation outputs: per-example JSONL and summary JSON in a run directory, a markdown table, PNG plots.

Files are written atomically (a temporary file in the same directory, then `os.replace`), so a reader or a
resumed phase never sees half a file. JSON is strict: numpy scalars and arrays become Python numbers and lists,
dataclasses become dicts, nan and infinities become null.

Plots use the Agg canvas directly (`matplotlib.figure.Figure` + `FigureCanvasAgg`), so importing this module
changes no global matplotlib backend and needs no display; matplotlib is imported only when a plot is drawn.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from latentjax.eval.stats import wilson_interval


# ----------------------------------------------------------------------------------------------------------------
# JSON / JSONL
# ----------------------------------------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy types, dataclasses, tuples and non-finite floats into strict-JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(obj.as_dict() if hasattr(obj, "as_dict") else dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write `text` (UTF-8) to `path` via a temporary file in the same directory and `os.replace`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Strict JSON, indented, keys in insertion order; atomic."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)
                             + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> str:
    """One strict-JSON object per line; atomic."""
    lines = [json.dumps(to_jsonable(r), ensure_ascii=False, allow_nan=False) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_eval_outputs(run_dir: str | os.PathLike, name: str, examples: Iterable[Mapping[str, Any]],
                       summary: Mapping[str, Any]) -> tuple[str, str]:
    """`{run_dir}/{name}.jsonl` (one record per example) and `{run_dir}/{name}.summary.json`; returns both paths.

    The JSONL is written first, so a present summary implies a complete per-example dump.
    """
    run_dir = os.fspath(run_dir)
    jsonl = write_jsonl(os.path.join(run_dir, f"{name}.jsonl"), examples)
    summary_path = write_json(os.path.join(run_dir, f"{name}.summary.json"), summary)
    return jsonl, summary_path


# ----------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------

def format_accuracy(k: int, n: int, confidence: float = 0.95, digits: int = 1) -> str:
    """'61.5 [58.2, 64.7]': accuracy and Wilson interval in percent."""
    if n == 0:
        return "n/a"
    lo, hi = wilson_interval(k, n, confidence)
    return f"{100 * k / n:.{digits}f} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else format(float(value), float_format)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
                   float_format: str = ".4g") -> str:
    """GitHub markdown table of `rows` (dicts); columns default to the keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(c), float_format) for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------------

def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _wilson_errors(ks: Sequence[int], ns: Sequence[int], confidence: float) -> tuple[np.ndarray, np.ndarray]:
    acc = np.asarray([k / n for k, n in zip(ks, ns)])
    bounds = np.asarray([wilson_interval(k, n, confidence) for k, n in zip(ks, ns)]).reshape(-1, 2)
    return acc, np.stack([acc - bounds[:, 0], bounds[:, 1] - acc])


def plot_accuracy_vs_tokens(series: Mapping[str, Sequence[tuple[int, int, int]]], path: str | os.PathLike,
                            title: str = "", ylabel: str = "accuracy (%)", confidence: float = 0.95) -> str:
    """Accuracy against the number of soft tokens, one line per series, Wilson error bars; x axis in log2.

    `series[name]` is a list of (num_tokens, correct, n). Returns the PNG path.
    """
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ticks: set[int] = set()
    for name, points in series.items():
        points = sorted(points)
        xs = [p[0] for p in points]
        acc, err = _wilson_errors([p[1] for p in points], [p[2] for p in points], confidence)
        ax.errorbar(xs, 100 * acc, yerr=100 * err, marker="o", capsize=3, label=name)
        ticks.update(xs)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([str(t) for t in sorted(ticks)])
    ax.set_xlabel("soft tokens")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"accuracy vs soft tokens (Wilson {int(round(100 * confidence))}%)")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def plot_benchmark_bars(results: Mapping[str, Mapping[str, tuple[int, int]]], path: str | os.PathLike,
                        title: str = "", ylabel: str = "accuracy (%)", confidence: float = 0.95) -> str:
    """Grouped bars: one group per benchmark, one bar per model (e.g. base / teacher / student), Wilson CIs.

    `results[benchmark][model] = (correct, n)`; a model missing from a benchmark leaves a gap. Returns the path.
    """
    benchmarks = list(results)
    models = list(dict.fromkeys(m for b in benchmarks for m in results[b]))
    width = 0.8 / max(1, len(models))
    fig = _new_figure((max(4.0, 1.6 * len(benchmarks) + 2.0), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for j, model in enumerate(models):
        xs, ks, ns = [], [], []
        for i, bench in enumerate(benchmarks):
            if model in results[bench]:
                k, n = results[bench][model]
                xs.append(i + (j - (len(models) - 1) / 2) * width)
                ks.append(k)
                ns.append(n)
        if xs:
            acc, err = _wilson_errors(ks, ns, confidence)
            ax.bar(xs, 100 * acc, width=width, yerr=100 * err, capsize=3, label=model)
    ax.set_xticks(range(len(benchmarks)))
    ax.set_xticklabels(benchmarks)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title or f"accuracy per benchmark (Wilson {int(round(100 * confidence))}%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)
