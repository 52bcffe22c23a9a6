"""Does a pruning criterion predict spike flips? (issue #7 part 2: the pure pieces).

For a sample of weights, remove each one alone and measure how often its output
neuron's spike train changes (``removal_flip_rate``: the perturbation of the
output current is -w * scale * s_in, through the LIF dynamics of ``crisis``).
Then compare the measured flip rates with each criterion's scores (SF's p,
|w|, ...): Spearman rank correlation, and the fraction of all measured flips
caused by pruning the lowest-scored x% under each criterion (lower is better:
a good criterion removes weights that rarely flip spikes).

For a conv layer followed by BN and LIF, ``conv_removal_flip_rates`` does this for many
sampled weights (or groups of weights of one output channel) at once: removing weights
changes only their output channel's current, by -scale * sum w * (the input they see), so
each removal is one LIF run of one channel. ``layer_io`` gives every ConvBN's exact input
and output as the model computes them (``jsnn.models.observe``). The program
``train/theory.py flips`` wires these to a trained network and the scores of
``jsnn.sparsity.criteria``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.layers import ConvBN
from jsnn.models.observe import observe
from jsnn.neuron import LIFConfig, lif_time_major
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


# ------------------------------------------------------------ removal of weights of a conv layer


def layer_io(model, variables, images, train: bool = False) -> dict:
    """{layer path: (input, output)} of every ``ConvBN`` of ``model`` on ``images``, exactly as the
    model computes them (``jsnn.models.observe``): inputs folded [T*B, H, W, C] (the encoding
    layer: the image [B, H, W, C]), outputs the conv + BN currents. For a SpikingVGG each output
    is the input current of the LIF layer that follows it."""
    _, seen = observe(model, variables, images, train=train, neurons=False)
    return {path: (c.inputs, c.outputs) for path, c in seen.connections.items() if isinstance(c.module, ConvBN)}


def tap_input(inputs: jax.Array, kh, kw, ci, out_hw: tuple[int, int], stride: int, padding: int) -> jax.Array:
    """What kernel tap (kh, kw, ci) multiplies at every output position: ``inputs`` [..., H, W, C]
    zero-padded, shifted by (kh, kw) and strided -> [..., Ho, Wo] (a cross-correlation, as conv2d)."""
    lead = inputs.ndim - 3
    x = jnp.pad(inputs, [(0, 0)] * lead + [(padding, padding), (padding, padding), (0, 0)])
    ho, wo = out_hw
    span = ((ho - 1) * stride + 1, (wo - 1) * stride + 1)
    start = (0,) * lead + (kh, kw, ci)
    patch = jax.lax.dynamic_slice(x, start, x.shape[:lead] + span + (1,))[..., 0]
    return patch[..., ::stride, ::stride]


@functools.partial(jax.jit, static_argnames=("config", "stride", "padding", "chunk"))
def conv_removal_flip_rates(currents: jax.Array, inputs: jax.Array, kernel: jax.Array, scale: jax.Array,
                            taps: jax.Array, out_channel: jax.Array, config: LIFConfig = LIFConfig(),
                            stride: int = 1, padding: int = 1, chunk: int = 32) -> jax.Array:
    """Flip rate of removing each group of weights of one conv layer (followed by BN and LIF).

    ``currents`` [T, B, Ho, Wo, Cout]: the layer's LIF input currents (conv + BN, eval mode);
    ``inputs`` [T, B, H, W, Cin] (or [B, H, W, Cin] for the encoding layer, constant over T);
    ``kernel`` [k, k, Cin, Cout] as used (weight * mask); ``scale`` [Cout]: the BN factor
    gamma / sqrt(var + eps); ``taps`` [n, g, 3]: (kh, kw, ci) of g weights removed together, all
    into ``out_channel`` [n]. Removing them changes that channel's current by
    -scale * sum_g w_g * tap_input_g (exactly, BN being affine in eval mode). Returns [n]: the
    fraction of (image, position) spike trains of that channel, over T, that change.
    """
    if inputs.ndim == 4:
        inputs = inputs[None]
    out_hw = currents.shape[2:4]

    def one(args):
        tap, co = args
        x = jnp.take(currents, co, axis=-1)  # [T, B, Ho, Wo]

        def contrib(t):
            kh, kw, ci = t[0], t[1], t[2]
            return kernel[kh, kw, ci, co] * tap_input(inputs, kh, kw, ci, out_hw, stride, padding)

        delta = -scale[co] * jnp.sum(jax.vmap(contrib)(tap), axis=0)
        s0 = lif_time_major(x, config)
        s1 = lif_time_major(x + delta, config)
        return jnp.mean(jnp.any(s0 != s1, axis=0))

    return jax.lax.map(one, (taps, out_channel), batch_size=chunk)


def sample_taps(rng: np.random.Generator, kernel_shape, n: int, group: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` groups of ``group`` distinct weights sharing an output channel, uniformly at random
    (single weights: without replacement, all of them if the layer has at most ``n``).
    Returns taps [n, group, 3] (kh, kw, ci) and out_channel [n]."""
    kh, kw, cin, cout = kernel_shape
    per_channel = kh * kw * cin
    if group == 1:
        total = per_channel * cout
        flat = rng.choice(total, size=min(n, total), replace=False)
        co, rest = flat % cout, flat // cout
        inner = rest[:, None]
    else:
        co = rng.integers(0, cout, n)
        inner = np.stack([rng.choice(per_channel, size=group, replace=False) for _ in range(n)])
    i, k = np.unravel_index(inner, (kh * kw, cin))
    a, b = np.unravel_index(i, (kh, kw))
    return np.stack([a, b, k], axis=-1).astype(np.int32), co.astype(np.int32)


def group_scores(scores: np.ndarray, taps: np.ndarray, out_channel: np.ndarray) -> np.ndarray:
    """A criterion's score of each sampled group: the sum of its weights' scores [k, k, Cin, Cout]."""
    s = np.asarray(scores)
    return s[taps[..., 0], taps[..., 1], taps[..., 2], out_channel[:, None]].sum(axis=1)


def spearman_difference_interval(scores_a, scores_b, flip_rates, resamples: int = 1000, level: float = 0.95,
                                 seed: int = 0) -> list[float]:
    """Paired bootstrap interval of spearman(a, flips) - spearman(b, flips) over the sampled weights."""
    a, b, f = (np.asarray(x, np.float64).ravel() for x in (scores_a, scores_b, flip_rates))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, f.size, f.size)
        diffs.append(spearman(a[i], f[i]) - spearman(b[i], f[i]))
    lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]
