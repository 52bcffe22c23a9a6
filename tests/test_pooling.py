"""max_pool_2x2 equals flax's reduce_window max pool: value bit for bit, gradient exactly (ties included)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.pooling import max_pool_2x2
from tests import small_data


def numpy_pool_and_grad(x, g):
    """Plain loops: the max of each 2x2 window, its gradient to the first maximum in row-major order."""
    n, h, w, c = x.shape
    out = np.zeros((n, h // 2, w // 2, c), x.dtype)
    dx = np.zeros_like(x)
    for b, i, j, k in np.ndindex(out.shape):
        window = [(2 * i + di, 2 * j + dj) for di in (0, 1) for dj in (0, 1)]
        values = [x[b, r, s, k] for r, s in window]
        first = int(np.argmax(values))  # argmax returns the first maximum
        out[b, i, j, k] = values[first]
        r, s = window[first]
        dx[b, r, s, k] += g[b, i, j, k]
    return out, dx


@pytest.mark.parametrize("kind", ["spikes", "real"])
@pytest.mark.parametrize("hw", [(4, 6), (5, 7)])  # odd sizes drop the last row / column, as VALID pooling
def test_matches_reduce_window_and_numpy(kind, hw):
    kx, kg = jax.random.split(jax.random.PRNGKey(hw[0] * 10 + hw[1]))
    shape = (3, *hw, 4)
    x = (small_data.uniform(kx, shape) < 0.3).astype(jnp.float32) if kind == "spikes" else small_data.normal(kx, shape)
    g = small_data.normal(kg, (3, hw[0] // 2, hw[1] // 2, 4))
    ref_out, ref_vjp = jax.vjp(lambda a: nn.max_pool(a, (2, 2), (2, 2)), x)
    out, vjp = jax.jit(lambda a: jax.vjp(max_pool_2x2, a))(x)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0])
    np_out, np_dx = numpy_pool_and_grad(np.asarray(x), np.asarray(g))
    np.testing.assert_array_equal(out, np_out)
    np.testing.assert_allclose(vjp(g)[0], np_dx, rtol=0, atol=0)
    if kind == "spikes":  # the case the custom VJP exists for: windows with tied maxima
        windows = np.asarray(x)[:, : hw[0] // 2 * 2, : hw[1] // 2 * 2].reshape(3, hw[0] // 2, 2, hw[1] // 2, 2, 4)
        assert np.any(np.sum(windows, axis=(2, 4)) >= 2)
