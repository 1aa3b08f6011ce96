"""Golden values for latentjax.eval.stats, computed by hand or from published numbers."""
import math

import numpy as np
import pytest
from scipy import stats as st

from latentjax.eval import stats

Z95 = 1.959963984540054  # Phi^-1(0.975)


def wilson_closed_form(k, n, z=Z95):
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return center - half, center + half


def test_z_value():
    assert stats.z_value(0.95) == pytest.approx(Z95, abs=1e-12)
    assert stats.z_value(0.99) == pytest.approx(2.5758293035489, abs=1e-9)


def test_wilson_9_of_10_matches_closed_form():
    lo, hi = stats.wilson_interval(9, 10)
    exp_lo, exp_hi = wilson_closed_form(9, 10)
    assert (lo, hi) == pytest.approx((exp_lo, exp_hi), abs=1e-12)
    assert (lo, hi) == pytest.approx((0.5958, 0.9821), abs=1e-4)  # the textbook values for 9/10


def test_wilson_0_of_200_lower_bound_is_zero():
    lo, hi = stats.wilson_interval(0, 200)
    assert lo == pytest.approx(0.0, abs=1e-15)
    assert hi == pytest.approx((Z95 ** 2 / 200) / (1 + Z95 ** 2 / 200), abs=1e-12)  # p = 0 closed form
    assert hi == pytest.approx(0.0188453, abs=1e-7)  # 3.8415 / 203.8415


def test_wilson_reproduces_published_wmdp_intervals():
    # subliminal_reference.md 7.1 / 10.2: baseline 2,152/3,668 -> [57.07, 60.25], teacher 61.48% -> [59.89, 63.04]
    lo, hi = stats.wilson_interval(2152, 3668)
    assert (round(100 * lo, 2), round(100 * hi, 2)) == (57.07, 60.25)
    lo, hi = stats.wilson_interval(2255, 3668)
    assert (round(100 * lo, 2), round(100 * hi, 2)) == (59.89, 63.04)


def test_wilson_other_confidence_and_edges():
    z = stats.z_value(0.9)
    assert stats.wilson_interval(3, 7, confidence=0.9) == pytest.approx(wilson_closed_form(3, 7, z), abs=1e-12)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = stats.wilson_interval(5, 5)
    assert hi == pytest.approx(1.0) and lo < 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(6, 5)


def test_accuracy_summary_and_groups():
    s = stats.accuracy_summary([1, 0, 1, 1, True, False, 0, 0, 1, 1])
    assert (s.n, s.correct, s.accuracy) == (10, 6, 0.6)
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson_closed_form(6, 10), abs=1e-12)
    assert s.as_dict()["correct"] == 6
    groups = stats.accuracy_by_group([1, 0, 1, 1, 0], ["Level 1", "Level 2", "Level 1", "Level 2", "Level 2"])
    assert list(groups) == ["Level 1", "Level 2"]
    assert (groups["Level 1"].correct, groups["Level 1"].n) == (2, 2)
    assert (groups["Level 2"].correct, groups["Level 2"].n) == (1, 3)
    with pytest.raises(ValueError):
        stats.accuracy_summary([0, 1, 2])


def _table(both, a_only, b_only, neither):
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_by_hand():
    a, b = _table(both=6, a_only=8, b_only=2, neither=4)
    # P(X >= 8 | X ~ Bin(10, 1/2)) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56 / 1024
    r = stats.mcnemar_exact(a, b, alternative="greater")
    assert (r.n, r.a_only, r.b_only) == (20, 8, 2)
    assert r.p_value == pytest.approx(56 / 1024, abs=1e-15)
    assert r.difference == pytest.approx((14 - 8) / 20)
    assert stats.mcnemar_exact(a, b).p_value == pytest.approx(112 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(a, b).p_value == pytest.approx(st.binomtest(8, 10, 0.5).pvalue, abs=1e-15)
    assert stats.mcnemar_exact(a, b, alternative="less").p_value == pytest.approx(1 - 11 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(b, a, alternative="greater").p_value == pytest.approx(1013 / 1024, abs=1e-15)


def test_mcnemar_no_discordant_pairs_and_pooled():
    a, b = _table(both=5, a_only=0, b_only=0, neither=5)
    assert stats.mcnemar_exact(a, b).p_value == 1.0
    a1, b1 = _table(3, 4, 1, 2)
    a2, b2 = _table(2, 4, 1, 3)
    pooled = stats.mcnemar_exact_pooled([(a1, b1), (a2, b2)], alternative="greater")
    assert (pooled.a_only, pooled.b_only, pooled.n) == (8, 2, 20)
    assert pooled.p_value == pytest.approx(56 / 1024, abs=1e-15)
    assert pooled.accuracy_a == pytest.approx(13 / 20)
    with pytest.raises(ValueError):
        stats.mcnemar_exact([1, 0], [1, 0, 1])


def test_paired_permutation_exact_equals_mcnemar():
    a, b = _table(both=6, a_only=8, b_only=2, neither=4)
    for alt in ("two-sided", "greater", "less"):
        assert stats.paired_permutation_test(a, b, alternative=alt) == pytest.approx(
            stats.mcnemar_exact(a, b, alternative=alt).p_value, abs=1e-12)


def test_paired_permutation_monte_carlo_close_to_mcnemar_and_seeded():
    a, b = _table(both=100, a_only=38, b_only=22, neither=40)
    p_mc = stats.paired_permutation_test(a, b, alternative="greater", num_resamples=20_000, seed=3)
    assert p_mc == pytest.approx(stats.mcnemar_exact(a, b, alternative="greater").p_value, abs=0.006)
    assert p_mc == stats.paired_permutation_test(a, b, alternative="greater", num_resamples=20_000, seed=3)
    assert stats.paired_permutation_test([1, 0], [1, 0]) == 1.0


def test_bootstrap_is_seeded_and_close_to_wilson():
    rng = np.random.default_rng(0)
    x = (rng.random(1000) < 0.3).astype(int)
    lo, hi = stats.bootstrap_mean_ci(x, seed=1)
    assert (lo, hi) == stats.bootstrap_mean_ci(x, seed=1)
    assert (lo, hi) != stats.bootstrap_mean_ci(x, seed=2)
    w_lo, w_hi = stats.wilson_interval(int(x.sum()), x.size)
    assert lo == pytest.approx(w_lo, abs=0.006) and hi == pytest.approx(w_hi, abs=0.006)
    assert lo < x.mean() < hi


def test_paired_bootstrap_diff():
    a, b = _table(both=100, a_only=38, b_only=22, neither=40)
    d, lo, hi = stats.paired_bootstrap_diff(a, b, seed=0)
    assert d == pytest.approx(16 / 200)
    # normal approximation of the discordant-pair difference: sd = sqrt((a_only + b_only)/n - d^2) / sqrt(n)
    sd = math.sqrt((60 / 200 - d * d) / 200)
    assert lo == pytest.approx(d - Z95 * sd, abs=0.01) and hi == pytest.approx(d + Z95 * sd, abs=0.01)


def test_two_proportion_ztest():
    # subliminal_reference.md 7.2: teacher 61.48% vs baseline 58.67% of 3,668 -> z = 2.46, p = 0.014 (two-sided)
    z, p = stats.two_proportion_ztest(2255, 3668, 2152, 3668)
    assert round(z, 2) == 2.46 and round(p, 3) == 0.014
    # by hand: 30/50 vs 20/50, pooled 0.5 -> z = 0.2 / sqrt(0.25 * 0.04) = 2
    z, p = stats.two_proportion_ztest(30, 50, 20, 50, alternative="greater")
    assert z == pytest.approx(2.0, abs=1e-12)
    assert p == pytest.approx(0.5 * math.erfc(2 / math.sqrt(2)), abs=1e-12)
    assert stats.two_proportion_ztest(30, 50, 20, 50)[1] == pytest.approx(2 * p, abs=1e-12)
    assert stats.two_proportion_ztest(50, 50, 20, 20) == (0.0, 1.0)


def test_fisher_exact_by_hand():
    # [[3, 1], [1, 3]]: P(X >= 3) under the hypergeometric = (C(4,3) C(4,1) + 1) / C(8,4) = 17 / 70
    odds, p = stats.fisher_exact_test(3, 4, 1, 4, alternative="greater")
    assert odds == pytest.approx(9.0)
    assert p == pytest.approx(17 / 70, abs=1e-12)
    assert stats.fisher_exact_test(3, 4, 1, 4)[1] == pytest.approx(34 / 70, abs=1e-12)


def test_mean_std_and_t_interval():
    m, s = stats.mean_std([0.30, 0.32, 0.34])
    assert m == pytest.approx(0.32) and s == pytest.approx(0.02)
    r = stats.t_interval([0.30, 0.32, 0.34])
    t_975_2 = 4.302652729749462  # Student t quantile, 2 degrees of freedom
    assert (r.ci_low, r.ci_high) == pytest.approx((0.32 - t_975_2 * 0.02 / math.sqrt(3),
                                                   0.32 + t_975_2 * 0.02 / math.sqrt(3)), abs=1e-12)
    values = np.linspace(0, 1, 31)  # n = 31 > 30: the normal quantile (SL's rule)
    r = stats.t_interval(values)
    assert r.ci_high - r.mean == pytest.approx(Z95 * values.std(ddof=1) / math.sqrt(31), abs=1e-12)
    r = stats.t_interval(values, normal_above=None)
    assert r.ci_high - r.mean == pytest.approx(st.t.ppf(0.975, 30) * values.std(ddof=1) / math.sqrt(31))
    one = stats.t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)


def test_welch_ttest_by_hand():
    a, b = [0.40, 0.42, 0.44], [0.30, 0.35, 0.31, 0.33]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    t_hand = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    t, p = stats.welch_ttest(a, b, alternative="greater")
    assert t == pytest.approx(t_hand, abs=1e-12)
    assert p == pytest.approx(st.t.sf(t_hand, df), abs=1e-12)


def test_holm_adjust():
    assert stats.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adj = stats.holm_adjust({"math": 0.01, "gsm8k": 0.04, "mmlu": 0.03})
    assert adj == pytest.approx({"math": 0.03, "gsm8k": 0.06, "mmlu": 0.06})
    assert stats.holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm_adjust([]) == []


def test_alternative_is_checked():
    with pytest.raises(ValueError):
        stats.mcnemar_exact([1], [0], alternative="bigger")


def test_wilson_interval_contains_the_estimate_at_the_extremes():
    from latentjax.eval.stats import wilson_interval

    for n in (1, 4, 7, 200, 1319):
        lo, hi = wilson_interval(0, n)
        assert lo == 0.0 < hi
        lo, hi = wilson_interval(n, n)
        assert lo < hi == 1.0
