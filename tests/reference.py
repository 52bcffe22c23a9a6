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


def loop_event_frames(events, sensor_size, timesteps, slicing="time", size=None, crop=None, binarise=False):
    """uint8 frames [T, H, W, 2] of one sample's events, event by event: T equal time windows of
    (t_last - t_first) // T ticks (at least 1; events past T windows dropped) or T bins of n // T
    events (the remainder in the last); resized by x * W // sensor width; centre-cropped at offset
    (size - crop) // 2; counts saturate at 255 (at 1 when ``binarise``). No denoising."""
    width, height = sensor_size[0], sensor_size[1]
    out_h, out_w = size if size is not None else (height, width)
    top, left = (0, 0) if crop is None else ((out_h - crop[0]) // 2, (out_w - crop[1]) // 2)
    frame_h, frame_w = (out_h, out_w) if crop is None else crop
    frames = np.zeros((timesteps, frame_h, frame_w, 2), np.int64)
    n = len(events)
    for i, e in enumerate(events):
        if slicing == "time":
            window = max((int(events[-1]["t"]) - int(events[0]["t"])) // timesteps, 1)
            b = (int(e["t"]) - int(events[0]["t"])) // window
            if b >= timesteps:
                continue
        else:
            b = min(i // max(n // timesteps, 1), timesteps - 1)
        x, y = int(e["x"]) * out_w // width - left, int(e["y"]) * out_h // height - top
        if 0 <= x < frame_w and 0 <= y < frame_h:
            frames[b, y, x, int(e["p"] != 0)] += 1
    return np.minimum(frames, 1 if binarise else 255).astype(np.uint8)


def conv_reference(x, kernel, padding):
    """float64 loop over the taps: out[n, h, w, o] = sum_{i, j, c} xpad[n, h + i, w + j, c] kernel[i, j, c, o]."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", xp[:, i:i + ho, j:j + wo], kernel[i, j])
    return out


def conv_reference_grads(x, kernel, padding, g):
    """d<out, g>/dx and /dkernel of the reference, in float64 (the loop's adjoint, written out)."""
    x64, k64, g64 = (np.asarray(a, np.float64) for a in (x, kernel, g))
    kh, kw = k64.shape[:2]
    xp = np.pad(x64, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = g64.shape[1:3]
    dxp, dk = np.zeros_like(xp), np.zeros_like(k64)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + ho, j:j + wo] += np.einsum("nhwo,co->nhwc", g64, k64[i, j])
            dk[i, j] = np.einsum("nhwc,nhwo->co", xp[:, i:i + ho, j:j + wo], g64)
    h, w = x64.shape[1:3]
    return dxp[:, padding:padding + h, padding:padding + w], dk


def assert_close(actual, expected, rtol=2e-6):
    """Within f32 accumulation's rounding of the largest value: where each product is exact (bf16 operands, or
    0/1 inputs) only the f32 sums round."""
    actual = np.asarray(actual, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_array_less(np.abs(actual - expected).max() / scale, rtol)
