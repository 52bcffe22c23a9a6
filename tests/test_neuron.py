"""LIF dynamics against a plain NumPy loop of paper Eq. 2-5 (U[t] = H[t-1] + X[t], S[t] = U[t] >= V_th,
H[t] = V_reset S[t] + beta U[t] (1 - S[t]), H[0] = 0), and BPTT against hand-written NumPy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.neuron import LIFConfig, lif_time_major
from jsnn.surrogate import Surrogate
from tests import small_data


def numpy_lif(x, beta, v_th, v_reset, reset):
    """Paper Eq. 2-4 (hard reset to v_reset, or soft: H = beta (U - v_th S)), one timestep at a time."""
    h = np.zeros(x.shape[1:])
    spikes, potentials = [], []
    for t in range(x.shape[0]):
        u = h + x[t]
        s = (u >= v_th).astype(np.float64)
        if reset == "hard":
            h = v_reset * s + beta * u * (1 - s)
        else:
            h = beta * (u - v_th * s)
        spikes.append(s)
        potentials.append(u)
    return np.stack(spikes), np.stack(potentials)


@pytest.mark.parametrize("beta,v_th,v_reset,reset", [
    (0.25, 1.0, 0.0, "hard"), (0.9, 0.5, 0.0, "hard"), (0.5, 1.0, -0.3, "hard"),
    (0.25, 1.0, 0.0, "soft"), (1.0, 0.7, 0.0, "soft"), (0.0, 1.0, 0.2, "hard"),
])
def test_lif_matches_numpy_loop(beta, v_th, v_reset, reset):
    x = np.random.default_rng(0).normal(0.6, 0.8, size=(7, 5, 3, 4))
    cfg = LIFConfig(decay=beta, threshold=v_th, reset_value=v_reset, reset=reset)
    s, u = lif_time_major(jnp.asarray(x, jnp.float32), cfg, return_potential=True)
    s_ref, u_ref = numpy_lif(x, beta, v_th, v_reset, reset)
    np.testing.assert_allclose(np.asarray(u), u_ref, atol=1e-5)
    # a potential within float error of threshold may legitimately round either way
    safe = np.abs(u_ref - v_th) > 1e-5
    np.testing.assert_array_equal(np.asarray(s)[safe], s_ref[safe])
    assert 0.05 < s_ref.mean() < 0.95  # the test exercises both spiking and silence


@pytest.mark.parametrize("options", [dict(remat=True), dict(unroll=1), dict(unroll=4), dict(unroll=6)])
def test_remat_and_unroll_change_nothing(options):
    x = small_data.normal(jax.random.key(1), (6, 4, 8)) + 0.5
    f = lambda cfg: jax.grad(lambda x: jnp.sum(lif_time_major(x, cfg) * jnp.arange(8.0)))(x)
    np.testing.assert_allclose(f(LIFConfig(**options)), f(LIFConfig()), rtol=1e-6)


def numpy_bptt(x, w, target_weights, beta, v_th, alpha, detach_reset):
    """Loss = sum_t sum(S[t] * c[t]); currents X[t] = x[t] @ w. Hand-written BPTT with the
    atan surrogate, returns dL/dw. Hard reset with V_reset = 0: H = beta * U * (1 - S)."""
    T = x.shape[0]
    X = np.einsum("tbi,io->tbo", x, w)
    h = np.zeros(X.shape[1:])
    U, S = [], []
    for t in range(T):
        u = h + X[t]
        s = (u >= v_th).astype(np.float64)
        h = beta * u * (1 - s)
        U.append(u), S.append(s)
    g_surr = lambda u: alpha / 2 / (1 + (math.pi / 2 * alpha * (u - v_th)) ** 2)
    dX = np.zeros_like(X)
    dH = np.zeros(X.shape[1:])  # dL/dH[t] flowing back from t+1
    for t in reversed(range(T)):
        u, s = U[t], S[t]
        dS = target_weights[t] + (0 if detach_reset else dH * (-beta * u))
        dU = dH * beta * (1 - s) + dS * g_surr(u)
        dX[t] = dU
        dH = dU  # U[t] = H[t-1] + X[t]
    return np.einsum("tbi,tbo->io", x, dX)


@pytest.mark.parametrize("detach_reset", [True, False])
def test_gradient_through_scan_matches_numpy_bptt(detach_reset):
    rng = np.random.default_rng(3)
    T, B, n_in, n_out = 4, 6, 5, 3
    x = rng.uniform(0, 1, (T, B, n_in))
    w = rng.normal(0.3, 0.6, (n_in, n_out))
    c = rng.normal(size=(T, B, n_out))
    cfg = LIFConfig(decay=0.25, threshold=1.0, surrogate=Surrogate("atan", 2.0), detach_reset=detach_reset)

    def loss(w):
        currents = jnp.einsum("tbi,io->tbo", jnp.asarray(x, jnp.float32), w)
        return jnp.sum(lif_time_major(currents, cfg) * c)

    g = jax.grad(loss)(jnp.asarray(w, jnp.float32))
    ref = numpy_bptt(x, w, c, 0.25, 1.0, 2.0, detach_reset)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(np.asarray(g), ref, rtol=2e-4, atol=2e-5)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"time-major \[T, B, \.\.\.\]"):
        lif_time_major(jnp.zeros((5,)))
    with pytest.raises(ValueError, match="T = 0"):
        lif_time_major(jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match="unknown surrogate"):
        LIFConfig(surrogate="nope")
    with pytest.raises(ValueError, match="reset must be"):
        LIFConfig(reset="medium")


def test_auto_unroll_loops_past_the_limit_and_changes_nothing(monkeypatch):
    from jsnn.neuron import FULL_UNROLL_MAX_T

    monkeypatch.setenv("JSNN_LIF_IMPL", "scan")  # the scan's own policy (from T = 16 jsnn runs the C++ kernel)

    def scan_unroll(x, cfg):
        eqns = jax.make_jaxpr(lambda x: lif_time_major(x, cfg))(x).jaxpr.eqns
        return [e.params["unroll"] for e in eqns if e.primitive.name == "scan"]

    short = jnp.ones((FULL_UNROLL_MAX_T, 2, 3))
    long = small_data.normal(jax.random.key(2), (FULL_UNROLL_MAX_T + 2, 4, 8)) + 0.5
    assert scan_unroll(short, LIFConfig()) == [FULL_UNROLL_MAX_T]
    assert scan_unroll(long, LIFConfig()) == [1]
    f = lambda cfg: jax.grad(lambda x: jnp.sum(lif_time_major(x, cfg) * jnp.arange(8.0)))(long)
    np.testing.assert_allclose(f(LIFConfig()), f(LIFConfig(unroll=long.shape[0])), rtol=1e-6)
