"""Leaky integrate-and-fire dynamics over time with ``jax.lax.scan`` (SPEC §1, Eq. 2–4).

Everything here is time-major: inputs and outputs have shape ``[T, B, ...]``.
Only the neuron state is scanned; the layers that produce the input current
run once over all timesteps folded into the batch axis (see ``layers.py``).

    U[t] = H[t-1] + X[t]                                  (2)
    S[t] = Heaviside(U[t] - V_th)                         (3)
    H[t] = V_reset * S[t] + beta * U[t] * (1 - S[t])      (4, hard reset)
    H[t] = beta * (U[t] - V_th * S[t])                    (soft reset)
    H[0] = 0
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jsnn.surrogate import Surrogate, make_spike_fn


FULL_UNROLL_MAX_T = 16  # LIFConfig.unroll=None unrolls the scan completely up to this many timesteps


@dataclasses.dataclass(frozen=True)
class LIFConfig:
    """LIF parameters; the defaults are Kim et al.'s (spikingjelly LIFNode, tau = 4/3)."""

    decay: float = 0.25  # beta in Eq. 4: 1 - 1/tau with tau = 4/3
    threshold: float = 1.0  # V_th
    reset_value: float = 0.0  # V_reset (hard reset only)
    reset: str = "hard"  # "hard" (Eq. 4) or "soft" (subtract V_th)
    detach_reset: bool = True  # no gradient through S[t] in the reset term
    surrogate: Surrogate = Surrogate("atan")
    remat: bool = False  # recompute the scan body in the backward pass (memory for long T)
    # timesteps per scan iteration; None: all T up to FULL_UNROLL_MAX_T, one per iteration above.
    # Unrolled, XLA fuses the LIF steps into straight-line code, which beats a while loop at small
    # T; but the unrolled chain's cost grows faster than T, and past 16 steps a loop that carries
    # the membrane potential is faster, forward and backward (python benchmarks/lif_unroll.py).
    unroll: int | None = None

    def __post_init__(self):
        if self.reset not in ("hard", "soft"):
            raise ValueError(f"LIF reset must be 'hard' or 'soft', got {self.reset!r}")
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"LIF decay (beta) must lie in [0, 1], got {self.decay}")
        if isinstance(self.surrogate, str):  # accept a bare family name
            object.__setattr__(self, "surrogate", Surrogate(self.surrogate))


def lif_time_major(
    currents: jax.Array, config: LIFConfig = LIFConfig(), return_potential: bool = False
):
    """Runs a LIF layer over time.

    Args:
      currents: input currents X, time-major ``[T, B, ...]`` (T >= 1).
      config: LIF parameters.
      return_potential: also return the membrane potentials U ``[T, B, ...]``
        (Eq. 2, before reset), needed for firing statistics.

    Returns:
      spikes ``[T, B, ...]`` with values in {0, 1} (same dtype as ``currents``),
      or ``(spikes, potentials)`` when ``return_potential``.
    """
    if currents.ndim < 2:
        raise ValueError(
            f"LIF input must be time-major [T, B, ...] with at least 2 axes, got shape {currents.shape}"
        )
    if currents.shape[0] < 1:
        raise ValueError(f"LIF input has T = {currents.shape[0]} timesteps; need T >= 1")

    spike = make_spike_fn(config.surrogate.name, config.surrogate.param)
    beta, v_th, v_reset = config.decay, config.threshold, config.reset_value

    def step(h, x):
        u = h + x
        s = spike(u - v_th)
        s_reset = jax.lax.stop_gradient(s) if config.detach_reset else s
        if config.reset == "hard":
            h = v_reset * s_reset + beta * u * (1.0 - s_reset)
        else:
            h = beta * (u - v_th * s_reset)
        return h, ((s, u) if return_potential else s)

    if config.remat:
        step = jax.checkpoint(step)
    h0 = jnp.zeros(currents.shape[1:], currents.dtype)
    unroll = config.unroll
    if unroll is None:
        unroll = currents.shape[0] if currents.shape[0] <= FULL_UNROLL_MAX_T else 1
    _, out = jax.lax.scan(step, h0, currents, unroll=unroll)
    return out
