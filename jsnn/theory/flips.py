"""Does a pruning criterion predict spike flips? (issue #7 part 2: the pure pieces).

For a sample of weights, remove each one alone and measure how often its output
neuron's spike train changes (``removal_flip_rate``: the perturbation of the
output current is -w * scale * s_in, through the LIF dynamics of ``crisis``).
Then compare the measured flip rates with each criterion's scores (SF's p,
|w|, ...): Spearman rank correlation, and the fraction of all measured flips
caused by pruning the lowest-scored x% under each criterion (lower is better:
a good criterion removes weights that rarely flip spikes).

The wiring to a trained network (which weights, the BN scale, the input spikes
of each layer, the scores pytree from ``jsnn.sparsity.criteria``) belongs to a
program; everything here takes plain arrays.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.neuron import LIFConfig
from jsnn.theory.crisis import lif_flips


def removal_flip_rate(currents: jax.Array, input_spikes: jax.Array, weight: float, scale: float = 1.0,
                      config: LIFConfig = LIFConfig()) -> float:
    """Fraction of samples whose output spike train (over T) changes when one weight is removed.

    ``currents`` [T, B]: the output neuron's input current (after BN) with the weight in place;
    ``input_spikes`` [T, B]: the presynaptic spikes that weight multiplies; ``scale``: the BN
    factor gamma / sqrt(var + eps) between the weight and the current.
    """
    delta = -weight * scale * input_spikes
    r = lif_flips(currents[..., None], delta[..., None], config)
    return float(jnp.mean(jnp.any(r.flips, axis=0)))


def rankdata(x) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks); NaN if either is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / den) if den > 0 else float("nan")


def flip_capture(flip_rates, scores, fractions=(0.1, 0.3, 0.5)) -> list[float]:
    """For each x in ``fractions``: share of the total measured flips that the lowest-scored
    x of the sampled weights cause (ties broken by sample order)."""
    f = np.asarray(flip_rates, np.float64).ravel()
    order = np.argsort(np.asarray(scores, np.float64).ravel(), kind="stable")
    total = f.sum()
    out = []
    for x in fractions:
        k = int(round(x * f.size))
        out.append(float(f[order[:k]].sum() / total) if total > 0 else 0.0)
    return out


def criterion_report(flip_rates, scores_by_criterion: dict, fractions=(0.1, 0.3, 0.5)) -> dict:
    """{criterion: {"spearman": rho, "flip_share_of_lowest": [...]}} for one layer's sampled weights."""
    return {name: {"spearman": spearman(s, flip_rates), "fractions": list(fractions),
                   "flip_share_of_lowest": flip_capture(flip_rates, s, fractions)}
            for name, s in scores_by_criterion.items()}
