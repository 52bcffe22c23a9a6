"""The strong-LTH construction of the paper (Lemma 4.1-4.2, Theorem 4.3, Appendix C).

Target layer: spikes s[t] in {0,1}^N_in -> LIF(W_hat s[t]) with N_out outputs,
W_hat in [-1/sqrt(N), 1/sqrt(N)]. Wide random layer: k = N_in * n virtual
spiking neurons in N_in blocks of n ("candidates per weight"); virtual neuron c
in block j(c) keeps only its in-weight v[c] from input j(c) (first mask), and
out-weights W_tilde [N_out, k]; v and W_tilde are i.i.d. U[-1, 1].

Step 1, the relay: a virtual neuron whose only input is v * s[t] with
v >= u_th > 0 fires exactly when s[t] = 1, whatever happened before. With the
hard reset of ``jsnn.neuron`` (V_reset = 0): H[0] = 0; s = 1 gives U = H + v >= u_th,
a spike, H = 0; s = 0 gives U = H + 0 = 0 < u_th, no spike, H = beta * 0 = 0. So H
stays 0 and the neuron is an exact relay. ``relay_condition`` states the general
condition (reset value, soft reset); tests check it by enumerating all inputs.

Steps 2-3, the second mask: for every (output i, input j) keep the out-weight of
one relay neuron of block j whose out-weight is within eps / N_in of W_hat[i, j]
(here the closest one). Then every output current is within eps of W_hat s.

Steps 4-6: the output LIF neurons then spike identically unless a target
membrane potential falls within the crisis neighbourhood (Theorem 3.5): the
error carried in the state is at most eps / (1 - beta).

Construction (mask finding, probabilities, widths) is NumPy on the host; the
spiking forward passes are JAX (``lif_time_major``), time-major [T, B, ...].
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jsnn.neuron import LIFConfig, lif_time_major

# ------------------------------------------------------------------ step 1: relay


def relay_condition(v, config: LIFConfig) -> np.ndarray:
    """True where a LIF neuron with the single input current v * s[t] spikes iff s[t] = 1
    for every binary input sequence.

    Hard reset to r: needs 0 < u_th (U = 0 must not fire), r < u_th (a reset state
    must not fire on its own), and v >= u_th - min(r, 0) (fires from the lowest state,
    H in {0} or {r beta^m}). Soft reset (H = beta (U - u_th)): the residual left after
    spikes approaches beta (v - u_th) / (1 - beta) from below, which must not exceed
    u_th, i.e. u_th <= v <= u_th / beta (beta > 0).
    """
    v = np.asarray(v, np.float64)
    th, r, beta = config.threshold, config.reset_value, config.decay
    if th <= 0:
        return np.zeros(v.shape, bool)
    if config.reset == "hard":
        if r >= th:
            return np.zeros(v.shape, bool)
        return v >= th - min(r, 0.0)
    upper = np.inf if beta == 0 else th / beta
    return (v >= th) & (v <= upper)


def relay_probability(config: LIFConfig) -> float:
    """C_th = P(relay_condition(v)) for v ~ U[-1, 1]; (1 - u_th) / 2 for the default hard reset."""
    th, r, beta = config.threshold, config.reset_value, config.decay
    if th <= 0:
        return 0.0
    if config.reset == "hard":
        lo, hi = (th - min(r, 0.0), 1.0) if r < th else (1.0, 1.0)
    else:
        lo, hi = th, (1.0 if beta == 0 else min(1.0, th / beta))
    return max(0.0, min(hi, 1.0) - max(lo, -1.0)) / 2.0


# ------------------------------------------------------------- the random network


class WideLayer(NamedTuple):
    """A random wide layer: k = n_in * per_block virtual neurons (NumPy arrays).

    ``v[c]`` is virtual neuron c's in-weight from input ``block[c]``, the only
    in-weight the first mask can keep (the other entries of V in R^{k x n_in}
    are pruned by construction, so they are not sampled).
    """

    v: np.ndarray  # [k]
    w: np.ndarray  # [n_out, k] out-weights W_tilde
    block: np.ndarray  # [k] int: the input each virtual neuron listens to


def sample_wide_layer(rng: np.random.Generator, n_in: int, n_out: int, per_block: int) -> WideLayer:
    """i.i.d. U[-1, 1] in- and out-weights; blocks of ``per_block`` neurons, one per input."""
    k = n_in * per_block
    return WideLayer(
        v=rng.uniform(-1.0, 1.0, k),
        w=rng.uniform(-1.0, 1.0, (n_out, k)),
        block=np.repeat(np.arange(n_in), per_block),
    )


def sample_target(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    """Target weights W_hat [n_out, n_in], i.i.d. U[-1/sqrt(n_in), 1/sqrt(n_in)]."""
    b = 1.0 / math.sqrt(n_in)
    return rng.uniform(-b, b, (n_out, n_in))


# ----------------------------------------------------------- steps 2-3: the masks


class Construction(NamedTuple):
    """The masks of the proof, as the chosen virtual neuron per target weight."""

    choice: np.ndarray  # [n_out, n_in] int: virtual neuron kept for W_hat[i, j], -1 if block j has no relay
    error: np.ndarray  # [n_out, n_in] |W_tilde[i, choice] - W_hat[i, j]| (|W_hat| if none)
    within: np.ndarray  # [n_out, n_in] bool: error <= eps / n_in (the proof's condition)

    @property
    def found(self) -> bool:
        """Lemma 4.1's event: every target weight has a candidate within eps / n_in."""
        return bool(np.all(self.within))


def find_masks(target: np.ndarray, layer: WideLayer, eps: float, config: LIFConfig,
               rule: str = "closest") -> Construction:
    """For each (i, j), one relay neuron of block j to carry W_hat[i, j] to output i.

    rule "closest": the relay whose out-weight is nearest W_hat[i, j]. rule "first":
    the first relay (in sampling order) within eps / n_in, as the proof's existence
    argument picks it, so the error can be anywhere up to eps / n_in; where none is
    within, the closest. Either way ``within`` says whether the proof's mask exists.
    """
    if rule not in ("closest", "first"):
        raise ValueError(f"unknown rule {rule!r}; choose closest or first")
    n_out, n_in = target.shape
    relay = relay_condition(layer.v, config)
    choice = np.full((n_out, n_in), -1, np.int64)
    error = np.abs(target).astype(np.float64)
    rows = np.arange(n_out)
    for j in range(n_in):
        cand = np.flatnonzero((layer.block == j) & relay)
        if cand.size == 0:
            continue
        d = np.abs(layer.w[:, cand] - target[:, j : j + 1])  # [n_out, |cand|]
        best = np.argmin(d, axis=1)
        if rule == "first":
            ok = d <= eps / n_in
            best = np.where(ok.any(axis=1), np.argmax(ok, axis=1), best)
        choice[:, j] = cand[best]
        error[:, j] = d[rows, best]
    return Construction(choice, error, error <= eps / n_in)


def masks_from_construction(construction: Construction, layer: WideLayer) -> tuple[np.ndarray, np.ndarray]:
    """The two {0,1} masks over the full wide layer: M_in [k, n_in] (virtual neuron c keeps
    its in-weight from its block iff its out-weight to some output is kept) and M_out [n_out, k]."""
    n_out, n_in = construction.choice.shape
    k = layer.v.size
    m_out = np.zeros((n_out, k), np.float32)
    for i in range(n_out):
        for j in range(n_in):
            c = construction.choice[i, j]
            if c >= 0:
                m_out[i, c] = 1.0
    used = m_out.any(axis=0)
    m_in = np.zeros((k, n_in), np.float32)
    m_in[np.flatnonzero(used), layer.block[used]] = 1.0
    return m_in, m_out


def full_in_weights(layer: WideLayer, n_in: int) -> np.ndarray:
    """V [k, n_in] with v[c] at (c, block[c]) and zeros elsewhere (the entries a mask could keep)."""
    V = np.zeros((layer.v.size, n_in), np.float32)
    V[np.arange(layer.v.size), layer.block] = layer.v
    return V


def pruned_network(construction: Construction, layer: WideLayer, pad_to: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The pruned wide layer restricted to its surviving virtual neurons: (V_kept [m, n_in],
    W_kept [n_out, m]). Pruned virtual neurons have no in- or out-weight left, so dropping
    them changes nothing; ``wide_forward`` on these equals it on the full masked matrices.
    ``pad_to`` appends fully pruned neurons (all-zero weights) up to that many, so shapes
    stay fixed across constructions (at most n_out * n_in neurons survive)."""
    n_in = construction.choice.shape[1]
    m_in, m_out = masks_from_construction(construction, layer)
    keep = np.flatnonzero(m_out.any(axis=0))
    V = full_in_weights(layer, n_in)[keep] * m_in[keep]
    W = (layer.w * m_out)[:, keep]
    if pad_to is not None:
        if pad_to < keep.size:
            raise ValueError(f"pad_to={pad_to} < {keep.size} surviving virtual neurons")
        V = np.concatenate([V, np.zeros((pad_to - keep.size, n_in))])
        W = np.concatenate([W, np.zeros((W.shape[0], pad_to - keep.size))], axis=1)
    return V.astype(np.float32), W.astype(np.float32)


# ------------------------------------------------------------- forward passes


def target_forward(spikes, target, config: LIFConfig, return_potential: bool = False):
    """Target layer on input spikes [T, B, n_in]: LIF(spikes @ W_hat^T) -> [T, B, n_out]."""
    currents = jnp.asarray(spikes, jnp.float32) @ jnp.asarray(target, jnp.float32).T
    return lif_time_major(currents, config, return_potential)


def wide_forward(spikes, in_weights, out_weights, config: LIFConfig, return_virtual: bool = False):
    """Two spiking layers: virtual = LIF(spikes @ V^T), out = LIF(virtual @ W^T).

    ``in_weights`` [k, n_in] and ``out_weights`` [n_out, k] are already masked.
    """
    x = jnp.asarray(spikes, jnp.float32)
    virtual = lif_time_major(x @ jnp.asarray(in_weights, jnp.float32).T, config)
    out = lif_time_major(virtual @ jnp.asarray(out_weights, jnp.float32).T, config)
    return (out, virtual) if return_virtual else out


def all_spike_trains(n_in: int, timesteps: int) -> np.ndarray:
    """Every binary input, time-major [T, 2^(n_in T), n_in]."""
    n = n_in * timesteps
    codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
    return codes.reshape(-1, timesteps, n_in).transpose(1, 0, 2).astype(np.float32)


# ------------------------------------------------------- probabilities and widths


def window_probability(target: np.ndarray, eps: float) -> np.ndarray:
    """q[i, j] = P(|w - W_hat[i, j]| <= eps / n_in) for w ~ U[-1, 1]."""
    half = eps / target.shape[1]
    return (np.minimum(1.0, target + half) - np.maximum(-1.0, target - half)) / 2.0


def mask_exists_probability(target: np.ndarray, per_block: int, eps: float, config: LIFConfig) -> float:
    """Exact P(Lemma 4.1's masks exist) over the random wide layer.

    Blocks are independent; in block j the number m of relay neurons is
    Binomial(n, C_th), and given m the outputs' out-weights are independent:
    P(block j ok) = E_m prod_i (1 - (1 - q_ij)^m).
    """
    c = relay_probability(config)
    q = window_probability(target, eps)
    n = per_block
    m = np.arange(n + 1)
    if c <= 0.0:
        log_pm = np.where(m == 0, 0.0, -np.inf)
    elif c >= 1.0:
        log_pm = np.where(m == n, 0.0, -np.inf)
    else:
        log_binom = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in m])
        log_pm = log_binom + m * math.log(c) + (n - m) * math.log1p(-c)
    total = 0.0
    for j in range(target.shape[1]):
        # log prod_i (1 - (1 - q_ij)^m), for every m
        miss = np.power.outer(1.0 - q[:, j], m)  # [n_out, n+1]
        log_ok = np.sum(np.log(np.clip(1.0 - miss, 1e-300, None)), axis=0)
        total += math.log(max(float(np.sum(np.exp(log_pm + log_ok))), 1e-300))
    return min(1.0, float(math.exp(total)))  # the binomial weights sum to 1 only up to rounding


def mask_failure_union_bound(n_in: int, n_out: int, per_block: int, eps: float, config: LIFConfig) -> float:
    """The proof's bound (S.16, S.24): P(no masks) <= n_out n_in (1 - C_th eps / n_in)^n."""
    p = relay_probability(config) * eps / n_in
    return float(min(1.0, n_out * n_in * (1.0 - p) ** per_block))


def width_lemma41(n: int, eps: float, delta: float, config: LIFConfig) -> float:
    """k >= N ceil(N / (C_th eps) log(N / delta)), Lemma 4.1 as the paper states it."""
    c = relay_probability(config)
    return n * math.ceil(n / (c * eps) * math.log(n / delta)) if c > 0 else math.inf


def width_union(n_in: int, n_out: int, eps: float, delta: float, config: LIFConfig) -> float:
    """The width the union bound over all n_out n_in weights needs:
    k >= n_in ceil(n_in / (C_th eps) log(n_out n_in / delta)) (the paper's log(N/delta)
    covers one output, Lemma C.2; a whole layer has N^2 weights, Lemma C.3)."""
    c = relay_probability(config)
    return n_in * math.ceil(n_in / (c * eps) * math.log(n_out * n_in / delta)) if c > 0 else math.inf


def width_theorem43(n: int, eps: float, delta: float, config: LIFConfig, density: float,
                    layers: int = 1, timesteps: int = 1) -> float:
    """k >= N^2 ceil(N / (C_th eps) log(N^2 L / (delta - N C L T eps))) (Theorem 4.3);
    infinite when delta <= N C L T eps (the crisis term alone exceeds delta)."""
    c = relay_probability(config)
    slack = delta - n * density * layers * timesteps * eps
    if c <= 0 or slack <= 0:
        return math.inf
    return n * n * math.ceil(n / (c * eps) * math.log(n * n * layers / slack))
