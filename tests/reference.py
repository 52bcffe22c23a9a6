"""Independent NumPy references shared by the tests."""
import numpy as np


def numpy_conv_same(x, k):
    """Direct NHWC / HWIO 'same' convolution with zero padding, as loops over the kernel taps."""
    kh, kw, _, o = k.shape
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    out = np.zeros(x.shape[:3] + (o,))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,co->bhwo", xp[:, i:i + x.shape[1], j:j + x.shape[2]], k[i, j])
    return out
