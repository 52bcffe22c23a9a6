"""Paired statistics for experiments over a few seeds (pure NumPy/SciPy; no JAX).

An experiment that compares two methods on the same seeds has, per seed, two accuracies on one test set
of ``n_test`` images. This module keeps them as what they are, integer counts of correct images, so that
two seeds with the same difference give *equal* differences (``2/360 - 0/360`` and ``5/360 - 3/360``
computed in floating point are not equal, and a rank test then breaks a tie that is not there), and it
tests them exactly:

- :func:`accuracy_counts`: accuracies (fractions or %) back to integer counts; refuses a value that is
  not an integer number of images.
- :func:`wilcoxon_exact`: the exact two-sided Wilcoxon signed-rank test, zeros and ties handled, by
  enumerating all 2^m sign flips of the m non-zero ranks (m <= 20).
- :func:`sign_flip_exact`: the exact sign-flip permutation test of the mean difference (same enumeration).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (a table's).
- :func:`t_interval`: Student-t confidence interval of a mean paired difference.
- :func:`paired`: all of the above for one pair of count arrays.
- :func:`count_test_exact`: the exact two-sided test of a count of successes among independent trials of
  known, possibly unequal, success probabilities (the Poisson-binomial distribution; the binomial test
  when they are equal).

Zeros (seeds where both methods got the same count) are handled by the **"wilcox" method** by default:
they are dropped, and the m seeds that differ are ranked (tied |d| get their average rank). A zero says
nothing about which method is ahead (in the lottery experiment many zeros are two networks both at
chance), so the test is the signed-rank test of the seeds that differ; it is the textbook and SciPy/R
default, so its p can be reproduced elsewhere, and it is the method under which issue 22 counted the old
report's errors (11 of 54 p-values, all from broken ties). Pratt's method (rank all |d|, zeros included,
then leave the zeros' ranks out of the statistic and of the sign flips) is ``zero_method="pratt"``; the
two agree whenever there is no zero, and the lottery report records both.

The null distribution is conditional on the observed |d| (ties and zeros as they are), so p is exact for
this data, not an approximation that assumes no ties. With m non-zero differences all on one side, the
smallest two-sided p the test can give is 2 / 2^m (0.0078 for m = 8).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

MAX_EXACT_N = 20  # 2^20 sign flips: about a million, a few MB


def accuracy_counts(accuracy, n_test: int, *, percent: bool = False, atol: float = 1e-6) -> np.ndarray:
    """Accuracies on a test set of ``n_test`` images as integer counts of correct images.

    ``accuracy`` is any array of fractions (or of % with ``percent=True``). Raises ``ValueError`` where
    accuracy x n_test is not within ``atol`` of an integer in [0, n_test]: such a value is not an accuracy
    on that test set (a wrong n_test, a rounded number, a mean over seeds).
    """
    if int(n_test) != n_test or n_test <= 0:
        raise ValueError(f"n_test must be a positive integer, got {n_test!r}")
    a = np.asarray(accuracy, dtype=np.float64)
    scaled = a * n_test / (100.0 if percent else 1.0)
    counts = np.round(scaled)
    off = np.abs(scaled - counts)
    if not np.all(np.isfinite(scaled)) or np.any(off > atol):
        bad = np.flatnonzero(~(off <= atol))
        i = bad[0]
        raise ValueError(f"accuracy {a.ravel()[i]!r} x {n_test} = {scaled.ravel()[i]!r} is not an integer count "
                         f"of correct images ({len(bad)} such value(s)); wrong n_test or a rounded value?")
    if np.any(counts < 0) or np.any(counts > n_test):
        raise ValueError(f"counts outside [0, {n_test}]")
    return counts.astype(np.int64)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties given their average rank, returned doubled (so always integers)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    doubled = np.empty(len(x), dtype=np.int64)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        doubled[order[i:j + 1]] = (i + 1) + (j + 1)  # 2 x the average of ranks i+1 .. j+1
        i = j + 1
    return doubled


def _subset_sums(values: np.ndarray) -> np.ndarray:
    """The sum of every subset of ``values`` (all 2^m of them; int64 in, int64 out)."""
    sums = np.zeros(1, dtype=np.int64)
    for v in values:
        sums = np.concatenate([sums, sums + v])
    return sums


def _check_differences(d) -> np.ndarray:
    d = np.asarray(d)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"expected a non-empty 1-d array of paired differences, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    return d


class WilcoxonResult(NamedTuple):
    statistic: float  # T+: the sum of the ranks of the positive differences (zeros' ranks excluded)
    pvalue: float  # exact, two-sided
    n_nonzero: int  # m: the differences whose signs are flipped (2^m sign patterns)


def wilcoxon_exact(d, zero_method: str = "wilcox") -> WilcoxonResult:
    """Exact two-sided Wilcoxon signed-rank test of paired differences ``d`` (pass integer counts).

    |d| is ranked with average ranks for ties; ``zero_method`` is ``"wilcox"`` (zeros dropped before
    ranking) or ``"pratt"`` (zeros take part in the ranking, then their ranks are dropped). Under the null
    each non-zero difference is equally likely + or -; all 2^m sign patterns of the m non-zero ranks are
    enumerated and p is the fraction whose T+ is at least as far from its null mean as the observed one.
    All zeros gives p = 1. Raises ``ValueError`` for m > 20.
    """
    d = _check_differences(d)
    if zero_method == "pratt":
        doubled = _average_ranks(np.abs(d))[d != 0]
    elif zero_method == "wilcox":
        doubled = _average_ranks(np.abs(d[d != 0]))
    else:
        raise ValueError(f"zero_method must be 'pratt' or 'wilcox', got {zero_method!r}")
    nz = d[d != 0]
    m = len(nz)
    if m == 0:
        return WilcoxonResult(0.0, 1.0, 0)
    if m > MAX_EXACT_N:
        raise ValueError(f"{m} non-zero differences: exact enumeration is limited to {MAX_EXACT_N}")
    total = int(doubled.sum())
    t_obs = int(doubled[nz > 0].sum())  # 2 T+
    sums = _subset_sums(doubled)  # 2 T+ of every sign pattern
    extreme = np.abs(2 * sums - total) >= abs(2 * t_obs - total)
    return WilcoxonResult(t_obs / 2, float(np.count_nonzero(extreme)) / len(sums), m)


def sign_flip_exact(d) -> float:
    """Exact two-sided sign-flip permutation test of the mean of paired differences ``d``.

    p is the fraction of the 2^m sign patterns of the m non-zero differences whose |sum| is at least the
    observed |sum|. Integer ``d`` (counts) is compared exactly; other values with a relative tolerance of
    1e-9. All zeros gives p = 1. Raises ``ValueError`` for m > 20.
    """
    d = _check_differences(d)
    nz = d[d != 0]
    m = len(nz)
    if m == 0:
        return 1.0
    if m > MAX_EXACT_N:
        raise ValueError(f"{m} non-zero differences: exact enumeration is limited to {MAX_EXACT_N}")
    if np.issubdtype(nz.dtype, np.integer) or np.all(nz == np.round(nz)):
        sums = _subset_sums(np.abs(nz).astype(np.int64))  # sum of the flipped-to-minus subset
        total = int(np.abs(nz).sum())
        observed = abs(int(nz.sum()))
        extreme = np.abs(total - 2 * sums) >= observed
    else:
        a = np.abs(nz.astype(np.float64))
        sums = np.zeros(1)
        for v in a:
            sums = np.concatenate([sums, sums + v])
        total, observed = a.sum(), abs(nz.sum())
        extreme = np.abs(total - 2 * sums) >= observed - 1e-9 * total
    return float(np.count_nonzero(extreme)) / len(sums)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order and shape.

    Sorted ascending, p_(i) (i = 1..m) becomes max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting
    where the adjusted p <= alpha controls the family-wise error rate at alpha over the m tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    if flat.size == 0:
        return p.copy()
    if np.any(~np.isfinite(flat)) or np.any(flat < 0) or np.any(flat > 1):
        raise ValueError("p-values must be finite and in [0, 1]")
    m = flat.size
    order = np.argsort(flat, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * flat[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted.reshape(p.shape)


class CountTest(NamedTuple):
    count: int  # observed successes
    expected: float  # sum of the success probabilities
    pvalue: float  # exact, two-sided


def poisson_binomial_pmf(probabilities) -> np.ndarray:
    """P(K = k), k = 0..n, for K the number of successes among independent trials with success
    ``probabilities`` p_1..p_n (each in [0, 1]), by convolving the n Bernoulli distributions."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("success probabilities must be finite and in [0, 1]")
    pmf = np.ones(1)
    for q in p:
        pmf = np.concatenate([pmf * (1 - q), [0.0]]) + np.concatenate([[0.0], pmf * q])
    return pmf


def count_test_exact(count: int, probabilities) -> CountTest:
    """Exact two-sided test that ``count`` successes came from independent trials with success
    ``probabilities`` (one per trial).

    p is the total probability of the counts no more likely than the observed one (the rule of
    ``scipy.stats.binomtest``, to which this reduces when the probabilities are equal; a relative
    tolerance of 1e-7 counts a tie as at most as likely)."""
    if int(count) != count:
        raise TypeError(f"count must be an integer, got {count!r}")
    pmf = poisson_binomial_pmf(probabilities)
    if not 0 <= count < len(pmf):
        raise ValueError(f"count {count} is outside 0..{len(pmf) - 1}, the number of trials")
    observed = pmf[int(count)]
    pvalue = float(min(1.0, pmf[pmf <= observed * (1 + 1e-7)].sum()))
    return CountTest(int(count), float(np.sum(probabilities)), pvalue)


def t_interval(d, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n).

    s is the sample standard deviation (ddof = 1). Differences that are all equal give low = high = mean.
    Needs n >= 2.
    """
    d = _check_differences(d).astype(np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("a t interval needs at least 2 differences")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half


def paired(a, b, zero_method: str = "wilcox") -> dict:
    """Statistics of the paired differences ``a - b`` of integer counts (one entry per seed).

    Returns ``per_seed`` (the differences, ints), ``mean`` and ``ci95`` (the t interval, in the units of
    a and b), ``wilcoxon_p`` (exact, two-sided, ``zero_method``), ``sign_flip_p`` (exact, two-sided) and
    ``ahead``/``tied``/``behind`` (how many seeds have a > b, a == b, a < b).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d of one shape, got {a.shape} and {b.shape}")
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise TypeError("pass integer counts (accuracy_counts), not accuracies: float differences break ties")
    d = a.astype(np.int64) - b.astype(np.int64)
    mean, lo, hi = t_interval(d)
    return {"per_seed": d.tolist(), "mean": mean, "ci95": [lo, hi],
            "wilcoxon_p": wilcoxon_exact(d, zero_method).pvalue, "sign_flip_p": sign_flip_exact(d),
            "ahead": int(np.count_nonzero(d > 0)), "tied": int(np.count_nonzero(d == 0)),
            "behind": int(np.count_nonzero(d < 0))}
