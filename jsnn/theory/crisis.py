"""Crisis probability of a spiking neuron, and the spike flips it bounds (paper Sec. 3).

A spike S = Heaviside(U - V_th) can change under a perturbation |dU| <= eps only
if U lies in the crisis neighbourhood [V_th - eps, V_th + eps]. So, for U with
density f (Eq. 6, Lemma 3.2-3.3),

    P(flip) <= P(|U - V_th| <= eps) = int_{V_th-eps}^{V_th+eps} f <= 2 eps sup f.

Over time (Lemma 3.4): while the perturbed and clean neuron have produced the
same spikes, the error carried in the state obeys dU[t] <= eps + beta dU[t-1]
(hard reset: both reset, error 0; both leak: error times beta), so
dU[t] <= eps (1 - beta^t) / (1 - beta) <= eps / (1 - beta). For a layer of N
neurons (Theorem 3.5) a union bound multiplies by N.

Everything here is a pure function over arrays: density estimates from samples
of U (empirical, histogram, Gaussian kernel density, the paper's Gaussian fit),
the bounds, and the measurement that runs a LIF layer with and without a
perturbation of its input current (time-major ``[T, B, ...]``, as in
``jsnn.neuron``) and counts flipped spikes.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from jsnn.neuron import LIFConfig, lif_time_major

# ---------------------------------------------------------------- densities of U


def crisis_mass(u: jax.Array, threshold: float, eps) -> jax.Array:
    """Empirical crisis probability: fraction of samples with |U - V_th| <= eps.

    This is the integral of the empirical distribution of ``u`` over the crisis
    neighbourhood (Eq. 6). ``eps`` may be an array; the result has its shape.
    """
    d = jnp.abs(jnp.ravel(u) - threshold)
    eps = jnp.asarray(eps, d.dtype)
    return jnp.mean(d[None, :] <= eps.reshape(-1, 1), axis=1).reshape(eps.shape)


def gaussian_fit(u: jax.Array, axis=None) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of ``u`` over ``axis`` (None: all samples)."""
    return jnp.mean(u, axis=axis), jnp.std(u, axis=axis)


def gaussian_crisis_mass(mu, sigma, threshold: float, eps) -> jax.Array:
    """P(|U - V_th| <= eps) for U ~ N(mu, sigma^2), elementwise (broadcasting)."""
    mu, sigma, eps = jnp.asarray(mu), jnp.asarray(sigma), jnp.asarray(eps)
    return norm.cdf(threshold + eps, mu, sigma) - norm.cdf(threshold - eps, mu, sigma)


def gaussian_sup_density(mu, sigma, threshold: float, eps) -> jax.Array:
    """sup of the N(mu, sigma^2) density over [V_th - eps, V_th + eps]: at the
    point of the interval nearest to mu."""
    mu, sigma, eps = jnp.asarray(mu), jnp.asarray(sigma), jnp.asarray(eps)
    x = jnp.clip(mu, threshold - eps, threshold + eps)
    return norm.pdf(x, mu, sigma)


def freedman_diaconis_width(u: jax.Array) -> jax.Array:
    """Histogram bin width 2 IQR n^(-1/3) (falls back to the std for a degenerate IQR)."""
    u = jnp.ravel(u)
    q75, q25 = jnp.percentile(u, 75.0), jnp.percentile(u, 25.0)
    spread = jnp.where(q75 > q25, q75 - q25, jnp.std(u) + 1e-12)
    return 2.0 * spread * u.size ** (-1.0 / 3.0)


def histogram_sup_density(u: jax.Array, threshold: float, eps: float, bin_width=None) -> jax.Array:
    """sup of a histogram density estimate over the bins that meet [V_th - eps, V_th + eps].

    Bins of width ``bin_width`` (default Freedman-Diaconis over all of ``u``)
    are laid out from V_th - eps; density = count / (n * width).
    """
    u = jnp.ravel(u)
    h = freedman_diaconis_width(u) if bin_width is None else jnp.asarray(bin_width, u.dtype)
    idx = jnp.floor((u - (threshold - eps)) / h)
    n_bins = jnp.maximum(jnp.ceil(2.0 * eps / h), 1.0)  # bins 0..n_bins-1 cover the interval
    # the largest count among bins 0..n_bins-1: count per bin via a sort-free trick,
    # a dense bincount over a bounded number of bins
    max_bins = 4096
    inside = (idx >= 0) & (idx < n_bins)
    counts = jnp.bincount(jnp.where(inside, idx, max_bins).astype(jnp.int32).clip(0, max_bins),
                          length=max_bins + 1)[:max_bins]
    return jnp.max(counts) / (u.size * h)


def silverman_bandwidth(u: jax.Array) -> jax.Array:
    """Silverman's rule: 0.9 min(std, IQR / 1.34) n^(-1/5)."""
    u = jnp.ravel(u)
    iqr = jnp.percentile(u, 75.0) - jnp.percentile(u, 25.0)
    s = jnp.std(u)
    spread = jnp.where(iqr > 0, jnp.minimum(s, iqr / 1.34), s)
    return 0.9 * spread * u.size ** (-0.2)


def kde_density(u: jax.Array, x: jax.Array, bandwidth=None) -> jax.Array:
    """Gaussian kernel density estimate of the samples ``u`` at the points ``x``."""
    u = jnp.ravel(u)
    bw = silverman_bandwidth(u) if bandwidth is None else jnp.asarray(bandwidth, u.dtype)
    z = (jnp.ravel(x)[:, None] - u[None, :]) / bw
    return (jnp.mean(jnp.exp(-0.5 * z * z), axis=1) / (bw * jnp.sqrt(2.0 * jnp.pi))).reshape(jnp.shape(x))


def kde_sup_density(u: jax.Array, threshold: float, eps: float, bandwidth=None, points: int = 33) -> jax.Array:
    """sup of the kernel density estimate over ``points`` evenly spaced points of the crisis interval."""
    x = jnp.linspace(threshold - eps, threshold + eps, points)
    return jnp.max(kde_density(u, x, bandwidth))


# --------------------------------------------------------------------- the bounds


def crisis_bound(sup_density, eps) -> jax.Array:
    """Lemma 3.2/3.3: P(flip) <= 2 eps sup f."""
    return 2.0 * jnp.asarray(eps) * jnp.asarray(sup_density)


def carried_error(eps, decay: float, t=None) -> jax.Array:
    """Largest membrane-potential error at timestep t (1-based) when every input
    current is off by at most eps and the spikes so far agree (Lemma 3.4):
    eps (1 - beta^t) / (1 - beta); t=None gives the limit eps / (1 - beta)."""
    eps = jnp.asarray(eps, jnp.float32)
    if t is None:
        return eps / (1.0 - decay) if decay < 1.0 else jnp.inf * eps
    t = jnp.asarray(t, jnp.float32)
    return eps * t if decay == 1.0 else eps * (1.0 - decay**t) / (1.0 - decay)


def union_bound(per_event_bound, count) -> jax.Array:
    """Theorem 3.5 / Lemma C.4: P(any of ``count`` events) <= min(1, count * bound)."""
    return jnp.minimum(1.0, jnp.asarray(count) * jnp.asarray(per_event_bound))


# ------------------------------------------------------------------ flip measurement


def perturbation(key: jax.Array, shape, eps: float, kind: str = "sign") -> jax.Array:
    """A perturbation of the input current, time-major ``shape`` = [T, B, ...], |delta| <= eps.

    kinds: "sign" (+-eps with a random sign per neuron, constant over time: the
    worst case for the error carried in the state), "uniform" (i.i.d. U[-eps, eps]),
    "constant" (+eps everywhere).
    """
    # drawn flat and reshaped: the same numbers (threefry numbers its draws by flat index), but XLA:CPU
    # compiles a flat draw several times faster than a 4-D one, once per layer shape
    if kind == "sign":
        sign = jax.random.rademacher(key, (math.prod(shape[1:]),)).astype(jnp.float32).reshape(shape[1:])
        return jnp.broadcast_to(eps * sign, shape)
    if kind == "uniform":
        return jax.random.uniform(key, (math.prod(shape),), jnp.float32, -eps, eps).reshape(shape)
    if kind == "constant":
        return jnp.full(shape, eps, jnp.float32)
    raise ValueError(f"unknown perturbation kind {kind!r}; choose sign, uniform or constant")


class FlipResult(NamedTuple):
    """A LIF layer run with clean and perturbed input currents, all ``[T, B, ...]``."""

    spikes: jax.Array  # clean spikes
    perturbed_spikes: jax.Array
    potentials: jax.Array  # clean membrane potentials U
    perturbed_potentials: jax.Array
    flips: jax.Array  # bool: spike differs at this timestep
    clean_history: jax.Array  # bool: no flip of this neuron at any earlier timestep


@functools.partial(jax.jit, static_argnames=("config",))
def lif_flips(currents: jax.Array, delta: jax.Array, config: LIFConfig = LIFConfig()) -> FlipResult:
    """Runs the LIF dynamics on ``currents`` and on ``currents + delta`` and compares spikes."""
    s0, u0 = lif_time_major(currents, config, return_potential=True)
    s1, u1 = lif_time_major(currents + delta, config, return_potential=True)
    flips = s0 != s1
    earlier = jnp.cumsum(flips, axis=0) - flips  # flips strictly before t
    return FlipResult(s0, s1, u0, u1, flips, earlier == 0)


@functools.partial(jax.jit, static_argnames=("threshold",))
def _flip_stats(flips, clean_history, potentials, eps_t, threshold):
    T, B = flips.shape[:2]
    f = flips.reshape(T, B, -1)
    c = clean_history.reshape(T, B, -1)
    in_crisis = jnp.abs(potentials.reshape(T, B, -1) - threshold) <= eps_t[:, None, None]
    n_clean = jnp.sum(c, axis=(1, 2))
    safe = lambda num, den: jnp.where(den > 0, num / jnp.maximum(den, 1), jnp.nan)  # noqa: E731
    layer_f = jnp.any(f, axis=-1)  # [T, B]
    layer_clean = (jnp.cumsum(layer_f, axis=0) - layer_f) == 0
    return {
        "neuron_flip_rate": safe(jnp.sum(f & c, axis=(1, 2)), n_clean),
        "neuron_crisis_mass": safe(jnp.sum(in_crisis & c, axis=(1, 2)), n_clean),
        "layer_flip_rate": safe(jnp.sum(layer_f & layer_clean, axis=1), jnp.sum(layer_clean, axis=1)),
        "layer_union_bound": union_bound(jnp.mean(in_crisis, axis=(1, 2)), f.shape[-1]),
        "any_flip_over_T": jnp.mean(jnp.any(f, axis=0)),
        "spike_flip_fraction": jnp.mean(f),
    }


def flip_report(result: FlipResult, threshold: float, eps: float, decay: float) -> dict:
    """Measured flip rates next to the crisis quantities that bound them, per timestep.

    Per neuron (Lemma 3.3/3.4): at timestep t, among neurons whose spikes agreed
    before t, the flip rate, and the empirical crisis mass of the clean U at
    carried_error(eps, beta, t) over the same neurons (a flip implies the clean
    U was in that neighbourhood, so measured <= crisis mass holds sample by sample).
    Per layer (Theorem 3.5; a layer = all neurons of one sample, axes 2...): the
    fraction of samples in which any neuron flipped at t after the whole layer
    agreed before t, and min(1, N x mean per-neuron crisis mass), the union bound.
    Also the fraction of neurons with any flip over all T and of all spikes that
    flip. Rates with nothing to condition on are None.
    """
    T = result.flips.shape[0]
    eps_t = carried_error(eps, decay, jnp.arange(1, T + 1))
    stats = jax.device_get(_flip_stats(result.flips, result.clean_history, result.potentials, eps_t,
                                       float(threshold)))
    clean = lambda x: None if x != x else float(x)  # noqa: E731  NaN -> None
    out = {k: [clean(x) for x in v] if getattr(v, "ndim", 0) else float(v) for k, v in stats.items()}
    out["timestep"] = list(range(1, T + 1))
    out["eps_t"] = [float(x) for x in eps_t]
    out["width"] = int(result.flips[0, 0].size)
    return out
