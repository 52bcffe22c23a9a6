"""jsnn.statistics: counts, the exact Wilcoxon signed-rank and sign-flip tests, Holm, t intervals.

The expected values are worked out by hand in the comments (every sign pattern listed where it is short),
then checked against SciPy where SciPy is exact and sees no ties, and against a brute-force enumeration
written here independently of the module (itertools over signs, scipy.stats.rankdata for the ranks).
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from jsnn.statistics import (
    accuracy_counts,
    count_test_exact,
    holm,
    paired,
    poisson_binomial_pmf,
    sign_flip_exact,
    t_interval,
    wilcoxon_exact,
)

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = ROOT / "docs" / "results" / "lottery_digits" / "summary.json"


# -- accuracies as counts ----------------------------------------------------------------------------------


def test_counts_from_fractions_and_percent():
    assert accuracy_counts([0.5, 1.0, 0.0, 359 / 360], 360).tolist() == [180, 360, 0, 359]
    assert accuracy_counts([97.5, 10.0, 100 * 37 / 360], 360, percent=True).tolist() == [351, 36, 37]
    assert accuracy_counts(np.array([[0.25], [0.75]]), 4).shape == (2, 1)
    assert accuracy_counts([0.5], 360).dtype == np.int64


def test_counts_refuse_what_is_not_an_integer_count():
    with pytest.raises(ValueError, match="not an integer count"):
        accuracy_counts([97.5], 361, percent=True)  # 351.975 images
    with pytest.raises(ValueError, match="not an integer count"):
        accuracy_counts([0.978], 360)  # a rounded accuracy: 352.08
    with pytest.raises(ValueError, match="not an integer count"):
        accuracy_counts([float("nan")], 360)
    with pytest.raises(ValueError):
        accuracy_counts([1.5], 10)  # 15 of 10 images
    with pytest.raises(ValueError):
        accuracy_counts([0.5], 0)


def test_paired_refuses_float_accuracies():
    with pytest.raises(TypeError, match="integer counts"):
        paired(np.array([0.5, 0.6]), np.array([0.4, 0.6]))


# -- the exact Wilcoxon signed-rank test, hand-computed ------------------------------------------------------


def test_three_positive_differences():
    # ranks 1, 2, 3 all positive: T+ = 6, total 6. Of the 8 sign patterns only T+ = 0 and T+ = 6 are as far
    # from the centre 3, so p = 2/8.
    r = wilcoxon_exact([1, 2, 3])
    assert r.pvalue == 0.25 and r.statistic == 6 and r.n_nonzero == 3
    assert wilcoxon_exact([-5, -7, -1]).pvalue == 0.25


def test_a_tie_between_a_negative_and_a_positive_difference():
    # d = -1, 1, 2, 3: |d| ranks 1.5, 1.5, 3, 4 (the two 1s share ranks 1 and 2). T+ = 1.5 + 3 + 4 = 8.5,
    # centre 5, so |T+ - 5| >= 3.5 means T+ <= 1.5 or T+ >= 8.5. The 16 subset sums of {1.5, 1.5, 3, 4}:
    # 0 1.5 1.5 3 4 3 4.5 5.5 4.5 5.5 7 6 7 8.5 8.5 10: three <= 1.5, three >= 8.5 -> p = 6/16.
    assert wilcoxon_exact([-1, 1, 2, 3]).pvalue == 6 / 16
    assert wilcoxon_exact([-1, 1, 2, 3]).statistic == 8.5
    # The same data with the tie broken the way float differences break it (-1 ranked below 1): ranks 1..4,
    # T+ = 9, and |T+ - 5| >= 4 holds for T+ in {0, 1, 9, 10}: p = 4/16. A broken tie moves p.
    assert wilcoxon_exact([-1, 1.0000001, 2, 3]).pvalue == 4 / 16


def test_ties_and_zeros_from_the_lottery_data():
    # SF-IMP-2 - reinit at 60 %, in images: 7, 4, 3, -1, -1, 5, 0, 0.
    d = [7, 4, 3, -1, -1, 5, 0, 0]
    # wilcox: the zeros dropped; |d| of the six others ranked: 1, 1 -> 1.5, 1.5; 3 -> 3; 4 -> 4; 5 -> 5;
    # 7 -> 6. T- = 3, total 21. Sign patterns with T- <= 3: {}, {1.5}, {1.5'}, {3}, {1.5, 1.5'} = 5, and 5 as
    # far on the other side: p = 10/64.
    r = wilcoxon_exact(d, "wilcox")
    assert (r.pvalue, r.statistic, r.n_nonzero) == (10 / 64, 18, 6)
    # pratt: all eight ranked, zeros included: 0, 0 -> 1.5, 1.5; 1, 1 -> 3.5, 3.5; 3 -> 5; 4 -> 6; 5 -> 7;
    # 7 -> 8. The zeros' ranks are left out: {3.5, 3.5, 5, 6, 7, 8}, total 33, T- = 7. Subsets with sum <= 7:
    # {}, {3.5}, {3.5'}, {5}, {6}, {7}, {3.5, 3.5'} = 7, and 7 on the other side: p = 14/64.
    r = wilcoxon_exact(d, "pratt")
    assert (r.pvalue, r.statistic, r.n_nonzero) == (14 / 64, 26, 6)


def test_zeros_are_dropped_and_all_zeros_give_one():
    # wilcox: 0, 1, 2, 3 is the test of 1, 2, 3 (p = 2/8). pratt: ranks 1, 2, 3, 4 with the zero's rank 1
    # left out: {2, 3, 4} all positive, T+ = 9 = total, again only the two extreme patterns: p = 2/8.
    assert wilcoxon_exact([0, 1, 2, 3], "wilcox").pvalue == 0.25
    assert wilcoxon_exact([0, 1, 2, 3], "pratt").pvalue == 0.25
    for method in ("wilcox", "pratt"):
        r = wilcoxon_exact([0, 0, 0, 0, 0, 0, 0, 0], method)
        assert (r.pvalue, r.n_nonzero) == (1.0, 0)
    # one non-zero difference: its two signs are equally extreme
    assert wilcoxon_exact([0, 0, 5]).pvalue == 1.0


def test_smallest_p_with_n_seeds_on_one_side():
    for n in range(1, 13):
        assert wilcoxon_exact(np.arange(1, n + 1)).pvalue == 2 / 2 ** n
    assert wilcoxon_exact(np.arange(1, 21)).pvalue == 2 / 2 ** 20
    with pytest.raises(ValueError, match="limited to 20"):
        wilcoxon_exact(np.arange(1, 22))
    with pytest.raises(ValueError):
        wilcoxon_exact([1, 2], zero_method="zsplit")


@pytest.mark.parametrize("n", range(2, 14))
def test_agrees_with_scipy_where_scipy_is_exact(n):
    # no zeros and no ties in |d|: SciPy's exact distribution applies
    rng = np.random.default_rng(n)
    for _ in range(20):
        mags = rng.choice(np.arange(1, 100), size=n, replace=False)
        d = mags * rng.choice([-1, 1], size=n)
        expected = stats.wilcoxon(d, method="exact", alternative="two-sided").pvalue
        assert wilcoxon_exact(d).pvalue == pytest.approx(expected, abs=1e-12), d
        assert wilcoxon_exact(d, "pratt").pvalue == wilcoxon_exact(d, "wilcox").pvalue


def _brute_force_wilcoxon(d, zero_method):
    """Every sign pattern of the non-zero differences, T+ from scipy.stats.rankdata, in exact fractions."""
    d = np.asarray(d)
    if zero_method == "wilcox":
        nz = d[d != 0]
        ranks = stats.rankdata(np.abs(nz))
    else:
        ranks = stats.rankdata(np.abs(d))[d != 0]
        nz = d[d != 0]
    if len(nz) == 0:
        return Fraction(1)
    ranks = [Fraction(r).limit_denominator(2) for r in ranks]
    centre = sum(ranks) / 2
    observed = abs(sum(r for r, x in zip(ranks, nz) if x > 0) - centre)
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(nz)):
        t_plus = sum(r for r, s in zip(ranks, signs) if s > 0)
        hits += abs(t_plus - centre) >= observed
    return Fraction(hits, 2 ** len(nz))


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
def test_agrees_with_brute_force_with_ties_and_zeros(zero_method):
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 11))
        d = rng.integers(-4, 5, size=n)  # small range: many ties and zeros
        expected = _brute_force_wilcoxon(d, zero_method)
        assert wilcoxon_exact(d, zero_method).pvalue == float(expected), (d, zero_method)


# -- the sign-flip test ------------------------------------------------------------------------------------


def test_sign_flip_by_hand():
    # 1, 2, 3: the 8 sums +-1 +-2 +-3 are 6 4 2 0 0 -2 -4 -6; |sum| >= 6 twice: p = 2/8
    assert sign_flip_exact([1, 2, 3]) == 0.25
    # 1, 1, -2: observed sum 0, every pattern is as extreme
    assert sign_flip_exact([1, 1, -2]) == 1.0
    # 4, 1, 1, 0: sums of +-4 +-1 +-1 are 6 4 4 2 -2 -4 -4 -6; |sum| >= 6 twice: p = 2/8 (the zero is not flipped)
    assert sign_flip_exact([4, 1, 1, 0]) == 0.25
    # 5, -1, 2: observed 6; sums of +-5 +-1 +-2: 8 6 4 2 -2 -4 -6 -8; |sum| >= 6 four times: p = 4/8
    assert sign_flip_exact([5, -1, 2]) == 0.5
    assert sign_flip_exact([0, 0, 0]) == 1.0


def test_sign_flip_agrees_with_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 11))
        d = rng.integers(-20, 21, size=n)
        sums = [sum(s * x for s, x in zip(signs, d)) for signs in itertools.product((1, -1), repeat=n)]
        expected = sum(abs(s) >= abs(int(d.sum())) for s in sums) / 2 ** n
        assert sign_flip_exact(d) == expected, d
        # the same test on the same values given as floats
        assert sign_flip_exact(d / 3.6) == expected, d


# -- Holm ----------------------------------------------------------------------------------------------------


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum
    # 0.02, 0.03, 0.06, 0.06; back in input order:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    # capped at 1, and a later smaller product cannot undercut an earlier one
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.01, 0.9, 0.02]), [0.03, 0.9, 0.04], atol=1e-15)
    # 54 p-values all at 2/2^8: each becomes 54 * 2/256 = 0.421875
    np.testing.assert_array_equal(holm(np.full((9, 6), 2 / 256)), np.full((9, 6), 54 * 2 / 256))
    assert holm([0.2]).tolist() == [0.2]
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


# -- t interval ----------------------------------------------------------------------------------------------


def test_t_interval_by_hand():
    # 1, 2, 3, 4: mean 2.5, s = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3); t(0.975, 3) = 3.18244630528
    # (tables: 3.182); half width 3.18244630528 * sqrt(5/3) / 2 = 2.05426...
    mean, lo, hi = t_interval([1, 2, 3, 4])
    half = 3.18244630528 * np.sqrt(5 / 3) / 2
    assert mean == 2.5
    assert lo == pytest.approx(2.5 - half, abs=1e-9) and hi == pytest.approx(2.5 + half, abs=1e-9)
    assert 2.5 - half == pytest.approx(0.4457, abs=1e-4)
    # 90 %: t(0.95, 3) = 2.35336343480
    mean, lo, hi = t_interval([1, 2, 3, 4], confidence=0.9)
    assert hi - mean == pytest.approx(2.35336343480 * np.sqrt(5 / 3) / 2, abs=1e-9)
    # no spread: a zero-width interval
    assert t_interval([3, 3, 3]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        t_interval([1])


def test_paired_summary():
    r = paired(np.array([10, 12, 11, 9]), np.array([9, 10, 11, 12]))
    assert r["per_seed"] == [1, 2, 0, -3]
    assert (r["ahead"], r["tied"], r["behind"]) == (2, 1, 1)
    assert r["mean"] == 0.0
    # wilcox: 1, 2, -3 ranked 1, 2, 3; T+ = 3 = the centre: p = 1
    assert r["wilcoxon_p"] == 1.0 and r["sign_flip_p"] == 1.0


def test_no_jax():
    code = "import sys, jsnn.statistics; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# -- the lottery experiment's committed accuracies ----------------------------------------------------------


def _committed():
    with open(SUMMARY) as f:
        S = json.load(f)
    counts = {name: accuracy_counts(acc, S.get("n_test", 360), percent=True) for name, acc in S["accuracy"].items()}
    return S, counts


def test_lottery_accuracies_are_counts_of_360():
    S, counts = _committed()
    assert S["n_test"] == 360  # digits: 1797 images, 20 % test split (jsnn.data.datasets.load_digits)
    from jsnn.data import load_dataset

    assert len(load_dataset("digits").test_labels) == S["n_test"]
    for name, acc in S["accuracy"].items():
        np.testing.assert_allclose(100 * counts[name] / 360, acc, rtol=0, atol=1e-9)
        assert np.abs(np.asarray(acc) * 360 / 100 - counts[name]).max() < 1e-6


def test_float_differences_broke_a_tie_in_the_old_report():
    # SF-IMP-1 - reinit at 84 % (round 2): in images -2, 0, 4, 8, 2, 11, 1, 5. The -2 and the +2 tie
    # (ranks 2.5 and 2.5 of the seven non-zero |d| 1 2 2 4 5 8 11 -> 1 2.5 2.5 4 5 6 7). T- = 2.5; sign
    # patterns with T- <= 2.5: {}, {1}, {2.5}, {2.5'} = 4, and 4 on the other side: p = 8/128 = 0.0625.
    S, counts = _committed()
    d = counts["sf1"][:, 2] - counts["sf1_reinit"][:, 2]
    assert d.tolist() == [-2, 0, 4, 8, 2, 11, 1, 5]
    assert wilcoxon_exact(d).pvalue == 0.0625
    # The old report took the differences of the percentages in floating point: -0.5555555555555429 and
    # 0.5555555555555571 are not equal, SciPy ranks the negative one below, T- = 2 and p = 6/128 = 0.046875,
    # the 0.047 it printed.
    acc = {k: np.asarray(v) for k, v in S["accuracy"].items()}
    d_float = acc["sf1"][:, 2] - acc["sf1_reinit"][:, 2]
    assert abs(d_float[0]) != abs(d_float[4])
    assert stats.wilcoxon(d_float, zero_method="wilcox").pvalue == 0.046875
    # what the report now records for that cell
    entry = {e["round"]: e for e in S["paired"]["sf1 - sf1_reinit"]}[2]
    assert entry["wilcoxon_p"] == 0.0625 and entry["per_seed_images"] == d.tolist()


def test_report_p_values_are_the_exact_ones():
    # Every cell of the committed paired table: p recomputed from the counts, 54 of them, Holm over the 54.
    S, counts = _committed()
    ps, holms, old_way = [], [], []
    acc = {k: np.asarray(v) for k, v in S["accuracy"].items()}
    for label, rows in S["paired"].items():
        a, b = (x.strip() for x in label.split(" - "))
        for e in rows:
            k = e["round"]
            d = counts[a][:, k] - counts[b][:, k]
            assert e["wilcoxon_p"] == wilcoxon_exact(d).pvalue
            assert e["wilcoxon_p_pratt"] == wilcoxon_exact(d, "pratt").pvalue
            ps.append(e["wilcoxon_p"])
            holms.append(e["wilcoxon_p_holm"])
            fd = acc[a][:, k] - acc[b][:, k]
            old_way.append(1.0 if np.all(fd == 0) else stats.wilcoxon(fd, zero_method="wilcox").pvalue)
    assert len(ps) == 54
    np.testing.assert_array_equal(holms, holm(ps))
    # issue 22: 11 of the 54 p-values of the float computation differ from the exact ones
    assert sum(abs(p - q) > 1e-12 for p, q in zip(ps, old_way)) == 11


def test_report_from_summary_reproduces_the_committed_files(tmp_path):
    # `report --from-summary` recomputes the statistics from the committed per-seed accuracies alone; run
    # on the committed summary it must give back the committed summary.json and table.md byte for byte
    # (so both were written by this code, and the accuracies went through unchanged).
    r = subprocess.run([sys.executable, "benchmarks/lottery_digits.py", "report", "--from-summary", str(SUMMARY),
                        "--out", str(tmp_path)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "summary.json").read_bytes() == SUMMARY.read_bytes()
    assert (tmp_path / "table.md").read_bytes() == (SUMMARY.parent / "table.md").read_bytes()
    assert not (tmp_path / "lottery_digits.png").exists()


# -- a count of successes against known probabilities ----------------------------------------------------


def test_count_test_hand_cases_and_binomial():
    # two fair coins: P(0, 1, 2 heads) = 1/4, 1/2, 1/4; 0 heads: the counts no likelier are 0 and 2
    np.testing.assert_allclose(poisson_binomial_pmf([0.5, 0.5]), [0.25, 0.5, 0.25])
    assert count_test_exact(0, [0.5, 0.5]).pvalue == pytest.approx(0.5)
    assert count_test_exact(1, [0.5, 0.5]).pvalue == pytest.approx(1.0)
    # certain trials: the only possible count has p = 1, any other p = 0
    assert count_test_exact(3, [1.0, 1.0, 1.0]).pvalue == 1.0
    assert count_test_exact(2, [1.0, 1.0, 1.0]).pvalue == 0.0
    r = count_test_exact(7, [0.3] * 20)
    assert r.count == 7 and r.expected == pytest.approx(6.0)
    # equal probabilities: SciPy's exact binomial test
    for k, n, q in ((7, 20, 0.3), (0, 20, 0.05), (20, 20, 0.9), (13, 30, 0.61)):
        assert count_test_exact(k, [q] * n).pvalue == pytest.approx(stats.binomtest(k, n, q).pvalue, rel=1e-9)
    with pytest.raises(ValueError, match="outside"):
        count_test_exact(4, [0.5, 0.5])
    with pytest.raises(TypeError):
        count_test_exact(1.5, [0.5, 0.5])


def test_count_test_unequal_probabilities_against_enumeration():
    # every outcome of 10 trials of unequal probabilities enumerated (2^10), written apart from the module
    rng = np.random.default_rng(3)
    q = rng.uniform(0.05, 0.95, 10)
    pmf = np.zeros(11)
    for outcome in itertools.product((0, 1), repeat=10):
        o = np.array(outcome)
        pmf[o.sum()] += np.prod(np.where(o == 1, q, 1 - q))
    np.testing.assert_allclose(poisson_binomial_pmf(q), pmf, rtol=1e-12, atol=1e-15)
    for k in range(11):
        want = sum(x for x in pmf if x <= pmf[k] * (1 + 1e-7))
        assert count_test_exact(k, q).pvalue == pytest.approx(min(1.0, want), rel=1e-9)
