"""Surrogate spike function: the exact Heaviside step forward, the surrogate derivative g(U - V_th) backward
(atan alpha / 2 / (1 + (pi/2 alpha x)^2), rectangle 1/a on |x| < a/2, sigmoid alpha sig(alpha x) (1 - sig(alpha x)),
triangle max(0, 1 - |x|/gamma) / gamma)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.surrogate import Surrogate, make_spike_fn, surrogate_names

X = np.linspace(-3.0, 3.0, 601).astype(np.float32)


def reference_grad(name, p, x):
    """g(x) of each surrogate, written out with NumPy."""
    if name == "atan":
        return p / 2 / (1 + (math.pi / 2 * p * x) ** 2)
    if name == "rectangle":
        return np.where(np.abs(x) < p / 2, 1 / p, 0.0)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-p * x))
        return p * s * (1 - s)
    if name == "triangle":
        return np.maximum(0, 1 - np.abs(x) / p) / p
    raise AssertionError(name)


@pytest.mark.parametrize("name,param", [("atan", None), ("atan", 5.0), ("rectangle", None), ("rectangle", 0.5),
                                        ("sigmoid", None), ("sigmoid", 2.0), ("triangle", None), ("triangle", 0.3)])
def test_surrogate_gradient_matches_formula(name, param):
    spike = make_spike_fn(name, param)
    grad = jax.vmap(jax.grad(lambda x: spike(x)))(jnp.asarray(X))
    p = Surrogate(name, param).width
    np.testing.assert_allclose(np.asarray(grad), reference_grad(name, p, X.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_default_widths_are_specs():
    assert [Surrogate(n).width for n in ("atan", "rectangle", "sigmoid", "triangle")] == [2.0, 1.0, 4.0, 1.0]
    assert set(surrogate_names()) >= {"atan", "rectangle", "sigmoid", "triangle"}


@pytest.mark.parametrize("name", ["atan", "rectangle", "sigmoid", "triangle"])
def test_forward_is_exact_heaviside(name):
    out = np.asarray(make_spike_fn(name)(jnp.asarray(X)))
    np.testing.assert_array_equal(out, (X >= 0).astype(np.float32))
    assert make_spike_fn(name)(jnp.float32(0.0)) == 1.0  # U == V_th fires


def test_upstream_gradient_is_multiplied():
    spike = make_spike_fn("triangle")
    x = jnp.asarray([0.25, -0.5])
    _, vjp = jax.vjp(spike, x)
    np.testing.assert_allclose(vjp(jnp.asarray([2.0, 3.0]))[0], [2 * 0.75, 3 * 0.5])


def test_unknown_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown surrogate 'relu'.*atan"):
        make_spike_fn("relu")
    with pytest.raises(ValueError, match="positive width"):
        make_spike_fn("atan", -1.0)
