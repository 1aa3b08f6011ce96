"""LoRA hyperparameters and the choice of adapted projections by name pattern."""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Iterable, Union

from latentjax.models.hf_map import LAYER_PROJECTIONS

ALL_PROJECTIONS = tuple(LAYER_PROJECTIONS)  # q, k, v, o, gate, up, down (HF names, HF order)


def resolve_targets(patterns: Union[str, Iterable[str]]) -> tuple[str, ...]:
    """Projection names (HF order) chosen by `patterns`.

    A pattern is a projection name (`q_proj`), a short name (`q`), a glob over `proj` or `block.proj`
    (`*_proj`, `self_attn.*`, `mlp.*`), or `all` / `all-linear` for all seven. Each pattern must match something.
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    patterns = list(patterns)
    if not patterns:
        raise ValueError("LoRA needs at least one target projection; e.g. targets=('q_proj', 'v_proj') or 'all'.")
    chosen = set()
    for pat in patterns:
        if pat in ("all", "all-linear"):
            chosen.update(ALL_PROJECTIONS)
            continue
        hits = {proj for proj, block in LAYER_PROJECTIONS.items()
                if fnmatch.fnmatchcase(proj, pat) or fnmatch.fnmatchcase(f"{block}.{proj}", pat)
                or pat + "_proj" == proj}
        if not hits:
            raise ValueError(f"LoRA target pattern {pat!r} matches no projection; known projections: "
                             f"{', '.join(f'{b}.{p}' for p, b in LAYER_PROJECTIONS.items())}.")
        chosen |= hits
    return tuple(p for p in ALL_PROJECTIONS if p in chosen)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """PEFT's LoRA: y = W x + scale * B(A(dropout(x))), scale = alpha / r (alpha / sqrt(r) with rsLoRA).

    Frozen and hashable, so it can be a static argument of jitted functions.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple = ("q_proj", "v_proj")  # patterns (see resolve_targets); stored resolved, in HF order
    use_rslora: bool = False

    def __post_init__(self):
        object.__setattr__(self, "targets", resolve_targets(self.targets))
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def replace(self, **kw) -> "LoraConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "LoraConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"Unknown LoRA config field(s) {sorted(unknown)}; known: "
                           f"{[f.name for f in dataclasses.fields(cls)]}.")
        return cls(**d)
