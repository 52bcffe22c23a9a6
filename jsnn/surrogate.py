"""Spike function: exact Heaviside forward, surrogate derivative backward (atan by default).

The Heaviside step has zero derivative almost everywhere, so training an SNN
replaces dS/dU by a smooth bump g(U - V_th) in the backward pass only. A
surrogate family is one function ``g(x, width)`` registered by name; the
forward value is always the exact step, whatever the family.

    spike = make_spike_fn("atan", alpha=2.0)
    s = spike(u - v_th)      # 0/1 values, surrogate gradient
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

# name -> (derivative g(x, param), default param). The parameter is each
# family's width/sharpness: alpha for atan and sigmoid, a for rectangle,
# gamma for triangle. Defaults: atan alpha 2, rectangle width 1, sigmoid alpha 4, triangle gamma 1.
_SURROGATES: dict[str, tuple[Callable[[jax.Array, float], jax.Array], float]] = {}


def register_surrogate(name: str, default: float):
    """Registers ``g(x, param) -> dS/dU`` as a surrogate family called ``name``."""

    def wrap(fn):
        _SURROGATES[name] = (fn, default)
        return fn

    return wrap


@register_surrogate("atan", default=2.0)
def atan_grad(x, alpha):
    # derivative of arctan(pi/2 * alpha * x) / pi + 1/2 (spikingjelly ATan)
    return alpha / 2.0 / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


@register_surrogate("rectangle", default=1.0)
def rectangle_grad(x, a):
    return jnp.where(jnp.abs(x) < a / 2.0, 1.0 / a, 0.0).astype(x.dtype)


@register_surrogate("sigmoid", default=4.0)
def sigmoid_grad(x, alpha):
    sig = jax.nn.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)


@register_surrogate("triangle", default=1.0)
def triangle_grad(x, gamma):
    return jnp.maximum(0.0, 1.0 - jnp.abs(x) / gamma) / gamma


def surrogate_names() -> list[str]:
    return sorted(_SURROGATES)


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A surrogate family and its width parameter (None: the family's default)."""

    name: str = "atan"
    param: float | None = None

    def __post_init__(self):
        if self.name not in _SURROGATES:
            raise ValueError(
                f"unknown surrogate {self.name!r}; choose one of {surrogate_names()}"
            )
        if self.param is not None and not self.param > 0:
            raise ValueError(f"surrogate {self.name!r} needs a positive width parameter, got {self.param}")

    @property
    def width(self) -> float:
        return _SURROGATES[self.name][1] if self.param is None else float(self.param)

    def grad(self, x: jax.Array) -> jax.Array:
        """The surrogate derivative g(x) = dS/dU at x = U - V_th."""
        return _SURROGATES[self.name][0](x, self.width)


@functools.lru_cache(maxsize=None)
def _spike_fn(surrogate: Surrogate):
    @jax.custom_vjp
    def spike(x):
        return (x >= 0).astype(x.dtype)

    def fwd(x):
        return spike(x), x

    def bwd(x, g):
        return (g * surrogate.grad(x).astype(g.dtype),)

    spike.defvjp(fwd, bwd)
    return spike


def make_spike_fn(name: str = "atan", param: float | None = None) -> Callable[[jax.Array], jax.Array]:
    """Returns ``spike(x) = Heaviside(x)`` (1 where x >= 0) with surrogate gradient ``name``.

    ``x`` is the distance to threshold, U - V_th. The returned function is
    cached per (name, param), so jit sees the same function every time.
    """
    return _spike_fn(Surrogate(name, param))
