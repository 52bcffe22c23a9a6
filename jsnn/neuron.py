"""Leaky integrate-and-fire dynamics over time with ``jax.lax.scan`` (paper Eq. 2–4).

Everything here is time-major: inputs and outputs have shape ``[T, B, ...]``.
Only the neuron state is scanned; the layers that produce the input current
run once over all timesteps folded into the batch axis (see ``layers.py``).
``lif_step`` (with ``lif_reset``, Eq. 4) is the update, written once: the LIF layers,
the cost count's membrane updates and NIR import all call it.

    U[t] = H[t-1] + X[t]                                  (2)
    S[t] = Heaviside(U[t] - V_th)                         (3)
    H[t] = V_reset * S[t] + beta * U[t] * (1 - S[t])      (4, hard reset)
    H[t] = beta * (U[t] - V_th * S[t])                    (soft reset)
    H[0] = 0
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jsnn import lif_kernel
from jsnn.surrogate import Surrogate, make_spike_fn

FULL_UNROLL_MAX_T = 16  # LIFConfig.unroll=None unrolls the scan completely up to this many timesteps
# "auto" runs a LIF layer through jsnn.lif_kernel from this many timesteps on: whole training steps were slower
# with it at T = 4 and 8, faster at 16 (benchmarks/results/lif_kernel_threshold.md; docs/speed.md says how)
KERNEL_MIN_T = 16
LIF_IMPLS = ("auto", "scan", "kernel")


@dataclasses.dataclass(frozen=True)
class LIFConfig:
    """LIF parameters; the defaults are Kim et al.'s (spikingjelly LIFNode, tau = 4/3)."""

    decay: float = 0.25  # beta in Eq. 4: 1 - 1/tau with tau = 4/3
    threshold: float = 1.0  # V_th
    reset_value: float = 0.0  # V_reset (hard reset only)
    reset: str = "hard"  # "hard" (Eq. 4) or "soft" (subtract V_th)
    detach_reset: bool = True  # no gradient through S[t] in the reset term
    surrogate: Surrogate = Surrogate("atan")
    remat: bool = False  # recompute the scan body in the backward pass (memory for long T; scan only)
    # timesteps per scan iteration; None: all T up to FULL_UNROLL_MAX_T, one per iteration above.
    # Where JSNN_LIF_IMPL lets the C++ kernel run the layer (lif_impl), it replaces the scan.
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


def lif_reset(u, s, decay, threshold, reset_value=0.0, reset: str = "hard"):
    """H[t], the potential a neuron keeps after step t (Eq. 4), from its U[t] and S[t].

    The one place the reset and leak are written: the LIF layers (``lif_step``), the cost
    count's membrane updates and NIR import all call it. ``decay``, ``threshold`` and
    ``reset_value`` are scalars or arrays broadcasting against ``u`` (per-neuron parameters)."""
    if reset == "hard":
        return reset_value * s + decay * u * (1.0 - s)
    return decay * (u - threshold * s)


def lif_step(h, x, fire: Callable, decay, threshold, reset_value=0.0, reset: str = "hard", detach_reset: bool = True):
    """One timestep: (H[t-1], X[t]) -> (H[t], S[t], U[t]) (Eq. 2-4).

    ``fire(U)`` gives the spikes S (the threshold and the surrogate gradient are the caller's:
    jsnn's neurons fire at U >= threshold, NIR's at U > threshold). With ``detach_reset`` no
    gradient flows through S into the reset term."""
    u = h + x
    s = fire(u)
    s_reset = jax.lax.stop_gradient(s) if detach_reset else s
    return lif_reset(u, s_reset, decay, threshold, reset_value, reset), s, u


def lif_impl() -> str:
    """How LIF layers run over time, from ``$JSNN_LIF_IMPL``: "auto" (the default), "scan" or "kernel".

    "scan": ``jax.lax.scan`` everywhere. "kernel": ``jsnn.lif_kernel`` (C++, CPU) for every layer it
    supports, the scan for the others. "auto": the kernel only where it pays and is safe to pick
    unasked (``use_kernel``), and the scan where no C++ compiler is found (said once in the log)."""
    impl = os.environ.get("JSNN_LIF_IMPL", "auto") or "auto"
    if impl not in LIF_IMPLS:
        raise ValueError(f"JSNN_LIF_IMPL={impl!r} is not one of {', '.join(LIF_IMPLS)}")
    return impl


@functools.lru_cache(maxsize=None)
def _kernel_builds() -> bool:
    try:
        lif_kernel.load()
        return True
    except Exception as e:  # no compiler, or a build that fails: the scan computes the same
        logging.getLogger(__name__).warning("LIF layers run as a scan: %s", str(e).splitlines()[0])
        return False


def use_kernel(currents: jax.Array, config: LIFConfig) -> bool:
    """Whether ``lif_time_major`` runs these currents through the C++ kernel (``lif_impl``).

    The kernel computes from f32 currents, on the CPU backend, for the surrogates it has
    (``lif_kernel.supports``). "auto" also asks for at least ``KERNEL_MIN_T`` timesteps and
    ``config.unroll`` left to jsnn (None). Over several devices the kernel is split as the batch is
    (``lif_kernel``: each device runs it on its own neurons, over all T)."""
    impl = lif_impl()
    if impl == "scan" or currents.dtype != np.float32 or jax.default_backend() != "cpu":
        return False
    if lif_kernel.supports(config) is not None:
        return False
    if impl == "kernel":
        return True
    return currents.shape[0] >= KERNEL_MIN_T and config.unroll is None and _kernel_builds()


def lif_time_major(
    currents: jax.Array, config: LIFConfig = LIFConfig(), return_potential: bool = False, affine=None
):
    """Runs a LIF layer over time.

    Args:
      currents: input currents X, time-major ``[T, B, ...]`` (T >= 1).
      config: LIF parameters.
      return_potential: also return the membrane potentials U ``[T, B, ...]``
        (Eq. 2, before reset), needed for firing statistics.
      affine: ``(scale, shift)`` over the last axis, or None: the input is then ``currents * scale + shift``
        (a BatchNorm's map, ``jsnn.layers.Affine``), which the C++ kernel computes as it reads the currents (a
        fused multiply-add) and the scan before it (where XLA may fuse it into the scan and round the product
        and the sum apart: ``jsnn.layers.lif_folded`` applies it to the folded currents instead, as BatchNorm
        does, when the kernel does not run).

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

    if use_kernel(currents, config):
        return lif_kernel.lif_spikes(currents, config, return_potential, affine)
    if affine is not None:
        currents = currents * affine[0] + affine[1]
    spike = make_spike_fn(config.surrogate.name, config.surrogate.param)
    v_th = config.threshold

    def step(h, x):
        h, s, u = lif_step(h, x, lambda u: spike(u - v_th), config.decay, v_th, config.reset_value, config.reset,
                           config.detach_reset)
        return h, ((s, u) if return_potential else s)

    if config.remat:
        step = jax.checkpoint(step)
    h0 = jnp.zeros(currents.shape[1:], currents.dtype)
    unroll = config.unroll
    if unroll is None:
        unroll = currents.shape[0] if currents.shape[0] <= FULL_UNROLL_MAX_T else 1
    _, out = jax.lax.scan(step, h0, currents, unroll=unroll)
    return out
