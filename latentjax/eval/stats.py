"""Statistics for evaluation results: intervals for one accuracy, tests between two systems, summaries over seeds.

Conventions used throughout:
- A "correct" vector is one entry per evaluated item, bool or 0/1.
- `alternative` follows scipy: "two-sided", "greater" or "less", where "greater" means the *first* system (or
  group) is better than the second. The subliminal spec's test "student better than baseline" is therefore
  `mcnemar_exact(student, baseline, alternative="greater")`.
- Resampling (bootstrap, permutation) takes an explicit integer `seed`; the same seed gives the same numbers.

What the specs ask for (shared/spec/subliminal.md "Statistics", subliminal_reference.md section 7; telepathy.md
"Evaluation"): Wilson 95% intervals (clamped to [0, 1]); exact McNemar on the same items, one-sided; the pooled
two-proportion z-test (unpaired, for comparability with the JT replication); Holm correction across benchmarks;
across seeds, mean +- t-interval (SL's `compute_confidence_interval`: t for n <= 30, normal beyond) and Welch's
t-test.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _st

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _as_binary(correct: Iterable, name: str = "correct") -> np.ndarray:
    arr = np.asarray(list(correct) if not isinstance(correct, np.ndarray) else correct)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 or booleans")
    return arr.astype(bool)


def _as_paired(a: Iterable, b: Iterable) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_binary(a, "correct_a"), _as_binary(b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired inputs must have the same length, got {a.size} and {b.size}")
    return a, b


def z_value(confidence: float = 0.95) -> float:
    """Two-sided normal quantile: 1.959964 for confidence 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(_st.norm.ppf((1.0 + confidence) / 2.0))


# ----------------------------------------------------------------------------------------------------------------
# One proportion
# ----------------------------------------------------------------------------------------------------------------

def wilson_interval(k: int, n: int, confidence: float = 0.95, clamp: bool = True) -> tuple[float, float]:
    """Wilson score interval for k successes out of n.

    center = (p + z^2/(2n)) / (1 + z^2/n), half = z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n), z = Phi^-1((1+c)/2);
    the formula of both WMD (`wilson_score_interval`, unclamped) and SL (`compute_bernoulli_ci`, clamped).
    n = 0 gives (0, 1): no information.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = center - half, center + half
    if clamp:
        # Rounding can leave the bound a hair on the wrong side of p at k = 0 or k = n (e.g. 5.6e-17 > 0).
        lo, hi = max(0.0, min(lo, p)), min(1.0, max(hi, p))
    return lo, hi


@dataclasses.dataclass(frozen=True)
class AccuracySummary:
    """Accuracy of one system on one item set, with its Wilson interval."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def accuracy_summary(correct: Iterable, confidence: float = 0.95) -> AccuracySummary:
    """Accuracy (nan when empty) and Wilson interval of a correct vector."""
    arr = _as_binary(correct)
    n, k = int(arr.size), int(arr.sum())
    lo, hi = wilson_interval(k, n, confidence)
    return AccuracySummary(n=n, correct=k, accuracy=k / n if n else float("nan"), ci_low=lo, ci_high=hi,
                           confidence=confidence)


def accuracy_by_group(correct: Iterable, groups: Iterable, confidence: float = 0.95) -> dict[str, AccuracySummary]:
    """Accuracy summary per group label (e.g. MATH level or subject), keys sorted as strings."""
    arr = _as_binary(correct)
    keys = [str(g) for g in groups]
    if len(keys) != arr.size:
        raise ValueError(f"{len(keys)} group labels for {arr.size} items")
    keys_arr = np.asarray(keys, dtype=object)
    return {g: accuracy_summary(arr[keys_arr == g], confidence) for g in sorted(set(keys))}


def bootstrap_mean_ci(values: Iterable[float], confidence: float = 0.95, num_resamples: int = 10_000,
                      seed: int = 0, chunk: int = 1_000) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-example values (resampling examples with replacement).

    Deterministic for a given seed. Resamples are drawn in chunks so that memory stays at chunk x n.
    """
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("values must be a non-empty 1-D sequence")
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, chunk):
        m = min(chunk, num_resamples - start)
        idx = rng.integers(0, x.size, size=(m, x.size))
        means[start:start + m] = x[idx].mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------
# Two systems on the same items (paired)
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. `a_only` = items only system a got right, `b_only` = items only b got right."""

    n: int
    accuracy_a: float
    accuracy_b: float
    a_only: int
    b_only: int
    p_value: float
    alternative: str

    @property
    def difference(self) -> float:
        return self.accuracy_a - self.accuracy_b

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["difference"] = self.difference
        return d


def mcnemar_from_counts(a_only: int, b_only: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts: a_only ~ Binomial(a_only + b_only, 1/2) under H0.

    "greater" tests H1: system a better (a_only large). No discordant pairs gives p = 1.
    """
    _check_alternative(alternative)
    m = a_only + b_only
    if m == 0:
        return 1.0
    return float(_st.binomtest(a_only, m, 0.5, alternative=alternative).pvalue)


def mcnemar_exact(correct_a: Iterable, correct_b: Iterable, alternative: str = "two-sided") -> McNemarResult:
    """Exact (binomial) McNemar test of two systems scored on the same items."""
    return mcnemar_exact_pooled([(correct_a, correct_b)], alternative)


def mcnemar_exact_pooled(pairs: Sequence[tuple[Iterable, Iterable]], alternative: str = "two-sided") -> McNemarResult:
    """McNemar over several (a, b) runs (e.g. student seeds vs the baseline), discordant counts summed.

    The subliminal reference's option (b), "sum discordant pairs over seeds". When the same items recur in every
    run the pooled counts are not independent, so read the p-value as descriptive, next to the t-interval.
    """
    a_only = b_only = n = hits_a = hits_b = 0
    for ca, cb in pairs:
        a, b = _as_paired(ca, cb)
        a_only, b_only = a_only + int((a & ~b).sum()), b_only + int((~a & b).sum())
        n, hits_a, hits_b = n + a.size, hits_a + int(a.sum()), hits_b + int(b.sum())
    return McNemarResult(n=n, accuracy_a=hits_a / n if n else float("nan"),
                         accuracy_b=hits_b / n if n else float("nan"), a_only=a_only, b_only=b_only,
                         p_value=mcnemar_from_counts(a_only, b_only, alternative), alternative=alternative)


def paired_bootstrap_diff(values_a: Iterable[float], values_b: Iterable[float], confidence: float = 0.95,
                          num_resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean difference a - b over the same items and its percentile bootstrap interval (items resampled jointly).

    Returns (difference, ci_low, ci_high). Works for 0/1 correctness and for real per-item scores.
    """
    a = np.asarray(list(values_a), dtype=np.float64)
    b = np.asarray(list(values_b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired inputs must have the same length, got {a.size} and {b.size}")
    d = a - b
    lo, hi = bootstrap_mean_ci(d, confidence, num_resamples, seed)
    return float(d.mean()), lo, hi


def paired_permutation_test(values_a: Iterable[float], values_b: Iterable[float], alternative: str = "two-sided",
                            num_resamples: int = 10_000, seed: int = 0, exact_max: int = 16) -> float:
    """Paired permutation (sign-flip) test of mean(a - b) = 0: each item's a/b labels are swapped at random.

    Exact enumeration when at most `exact_max` items differ (pairs with a == b do not move the statistic), else
    Monte Carlo with p = (1 + #{T* >= T}) / (1 + R). For 0/1 correctness the exact version *is* the exact
    McNemar test (sign test on discordant pairs); tests rely on that as a cross-check.
    """
    _check_alternative(alternative)
    a = np.asarray(list(values_a), dtype=np.float64)
    b = np.asarray(list(values_b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired inputs must have the same length, got {a.size} and {b.size}")
    d = (a - b)[a != b]
    if d.size == 0:
        return 1.0
    observed = d.sum()
    if d.size <= exact_max:
        grid = np.arange(2 ** d.size)[:, None] >> np.arange(d.size)[None, :] & 1
        sums = ((1 - 2 * grid) * d[None, :]).sum(axis=1)
        extra = 0
    else:
        rng = np.random.default_rng(seed)
        sums = np.concatenate([(rng.choice((-1.0, 1.0), size=(min(1000, num_resamples - s), d.size)) * d).sum(1)
                               for s in range(0, num_resamples, 1000)])
        extra = 1
    eps = 1e-9 * max(1.0, abs(observed))
    if alternative == "greater":
        hits = np.count_nonzero(sums >= observed - eps)
    elif alternative == "less":
        hits = np.count_nonzero(sums <= observed + eps)
    else:
        hits = np.count_nonzero(np.abs(sums) >= abs(observed) - eps)
    return float(min(1.0, (hits + extra) / (sums.size + extra)))


# ----------------------------------------------------------------------------------------------------------------
# Two systems on different items (unpaired)
# ----------------------------------------------------------------------------------------------------------------

def two_proportion_ztest(k1: int, n1: int, k2: int, n2: int, alternative: str = "two-sided") -> tuple[float, float]:
    """Pooled two-proportion z-test of p1 = p2; returns (z, p_value). "greater" tests H1: p1 > p2.

    z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2)) with p = (k1 + k2) / (n1 + n2), as in the JT replication's
    `analyze_statistical_significance.py`. If both groups are all-correct or all-wrong, z = 0 and p = 1.
    """
    _check_alternative(alternative)
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one item")
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (p1 - p2) / se
    if alternative == "greater":
        p = _st.norm.sf(z)
    elif alternative == "less":
        p = _st.norm.cdf(z)
    else:
        p = 2 * _st.norm.sf(abs(z))
    return float(z), float(min(1.0, p))


def fisher_exact_test(k1: int, n1: int, k2: int, n2: int, alternative: str = "two-sided") -> tuple[float, float]:
    """Fisher's exact test on [[k1, n1 - k1], [k2, n2 - k2]]; returns (odds_ratio, p_value).

    "greater" tests H1: group 1's success rate is higher (odds ratio > 1), via scipy.stats.fisher_exact.
    """
    _check_alternative(alternative)
    res = _st.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative=alternative)
    return float(res.statistic), float(res.pvalue)


# ----------------------------------------------------------------------------------------------------------------
# Several seeds
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """Mean over runs (e.g. per-seed accuracies), sample standard deviation and a t-interval for the mean."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1, as pandas); std is nan for one value."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("need at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")


def t_interval(values: Iterable[float], confidence: float = 0.95, normal_above: Optional[int] = 30) -> SeedSummary:
    """mean +- q * s / sqrt(n), q = t_{(1+c)/2, n-1} for n <= `normal_above`, the normal quantile beyond.

    This is SL/TS `compute_confidence_interval` (n <= 30 -> t, else z); `normal_above=None` always uses t.
    One value gives a nan interval.
    """
    x = np.asarray(list(values), dtype=np.float64)
    mean, std = mean_std(x)
    n = int(x.size)
    if n < 2:
        return SeedSummary(n, mean, std, float("nan"), float("nan"), confidence)
    if normal_above is not None and n > normal_above:
        q = z_value(confidence)
    else:
        q = float(_st.t.ppf((1 + confidence) / 2, n - 1))
    half = q * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half, confidence)


def welch_ttest(values_a: Iterable[float], values_b: Iterable[float],
                alternative: str = "two-sided") -> tuple[float, float]:
    """Welch's unequal-variance t-test of mean(a) = mean(b) (e.g. per-seed student vs control accuracies).

    Returns (t, p_value); "greater" tests H1: mean(a) > mean(b). Uses scipy.stats.ttest_ind(equal_var=False).
    """
    _check_alternative(alternative)
    res = _st.ttest_ind(np.asarray(list(values_a), float), np.asarray(list(values_b), float), equal_var=False,
                        alternative=alternative)
    return float(res.statistic), float(res.pvalue)


# ----------------------------------------------------------------------------------------------------------------
# Multiple comparisons
# ----------------------------------------------------------------------------------------------------------------

def holm_adjust(p_values: Sequence[float] | Mapping[str, float]) -> list[float] | dict[str, float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input's order / keys.

    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) over p sorted ascending. The subliminal spec applies it
    across benchmarks (MATH primary; GSM8K and MMLU secondary). Reject H_i at level alpha iff adj_i <= alpha.
    """
    if isinstance(p_values, Mapping):
        keys = list(p_values)
        return dict(zip(keys, holm_adjust([p_values[k] for k in keys])))
    p = np.asarray(list(p_values), dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(v) for v in adjusted]

