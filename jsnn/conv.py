"""The 2-D convolution every ConvBN layer calls (NHWC input, HWIO kernel, symmetric padding).

One function so that a faster implementation (a custom VJP, a sparse-spike
kernel) can replace it behind the ordinary API, with tests proving equality.
"""
from __future__ import annotations

import jax


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [(padding, padding), (padding, padding)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
