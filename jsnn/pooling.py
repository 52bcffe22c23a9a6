"""2x2 max pooling, stride 2, NHWC: the value and gradient of ``flax.linen.max_pool``
(``reduce_window`` max; the gradient goes to the first maximum of each window in
row-major order, as XLA's select-and-scatter and PyTorch's ``max_pool2d`` route it),
written as four strided slices.

Why: on the CPU backend XLA (jaxlib 0.10) fuses a ``reduce_window`` with the
convolution that reads it into one YNNPACK graph, which runs that convolution
slower than XLA's own (measured on the small SNN-VGG of ``benchmarks/``, training
and inference: ``docs/speed.md``). The four maxima are exact, so the forward
value is bit-identical; the custom VJP keeps the gradient identical too, ties
included (binary spikes tie all the time, and ``jnp.maximum``'s own gradient
would split them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _corners(x):
    return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, H // 2, W // 2, C]; odd trailing rows / columns are dropped
    (VALID padding, as ``nn.max_pool(x, (2, 2), (2, 2))``)."""
    h, w = x.shape[1:3]
    a, b, d, e = _corners(x[:, : h - h % 2, : w - w % 2])
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(d, e))


def _fwd(x):
    return max_pool_2x2(x), x


def _bwd(x, g):
    h, w = x.shape[1:3]
    even = x[:, : h - h % 2, : w - w % 2]
    corners = _corners(even)
    m = jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))
    taken = jnp.zeros(m.shape, bool)
    grads = []
    for corner in corners:  # the first corner equal to the max, in row-major window order
        first = (corner == m) & ~taken
        taken = taken | first
        grads.append(jnp.where(first, g, jnp.zeros_like(g)))
    top = jnp.stack([grads[0], grads[1]], axis=3)      # [N, H/2, W/2, 2, C]: row 0 of each window
    bottom = jnp.stack([grads[2], grads[3]], axis=3)   # row 1
    dx = jnp.stack([top, bottom], axis=2)              # [N, H/2, 2, W/2, 2, C]
    dx = dx.reshape(even.shape)
    return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_fwd, _bwd)
