"""``digits_dvs``: scikit-learn's 8x8 digits turned into N-MNIST-style saccade event streams, offline.

N-MNIST was recorded by an ATIS sensor on a pan-tilt unit looking at MNIST digits on a screen
(Orchard et al., Front. Neurosci. 9:437, 2015): three 105 ms saccades moving the image along
(0, 0) -> (3.5, 7) -> (7, 0) -> (0, 0) pixels, cropped to 34x34. This module simulates that
recording for each digit by this recipe:

1. the glyph (values / 16) zoomed x2.5 bilinearly to 20x20, padded by 4 to MNIST's 28x28 box and
   placed at (x, y) = (1, 2) on the 34x34 sensor, moved along the saccade path in 1 ms steps
   (bilinear sub-pixel shifts);
2. per pixel, log intensity L = log(eps + I) and a contrast threshold C_ij ~ N(C, 0.03)
   (at least 0.05); each step emits floor(|L - L_ref| / C_ij) events of the sign of the change
   (1 = ON) and moves L_ref by that many thresholds;
3. the k-th crossing of a step at t0 + dt k C_ij / |dL| plus N(0, 50 us) jitter; Poisson
   background noise, 0.5 Hz per pixel (about 180 events); timestamps rounded, in [0, 2^23) us.

With C = 0.45 (the default here) the note measured 3 876 +- 313 events per digit (a real N-MNIST
sample has about 4 300). The note's reference loops over 315 time steps per digit (about 23 ms a
digit); here each step is computed for a chunk of digits at once, so all 1 797 build in seconds.
It is deterministic: chunk c of CHUNK digits draws from ``np.random.default_rng([*seed, c])``, and
the chunking is fixed, so the events depend on the seed only (bit for bit on one machine). The
recipe puts some crossings exactly on a threshold (a pixel that returns to an earlier intensity,
as every pixel does at the end of the third saccade), so rounding decides them: this code and the
note's loop, which round differently, agree on about 99 % of the events (tested).

The train/test split is the one ``jsnn.data.datasets.load_digits`` uses (``train_test_split(
test_size=0.2, stratify=labels, random_state=0)``), so digits_dvs sample i of each split is the
same digit as digits' sample i.
"""
from __future__ import annotations

import numpy as np

from jsnn.data.digits import digits_arrays, digits_split_indices

SENSOR_SIZE = (34, 34, 2)  # (W, H, P), N-MNIST's
SACCADE_US = 105_000  # one saccade (Orchard et al. 2015)
# image offset (dx, dy) in pixels at 0, 105, 210, 315 ms: the inverse of tonic's NMNIST stabilize()
WAYPOINTS = np.array([[0.0, 0.0], [3.5, 7.0], [7.0, 0.0], [0.0, 0.0]])
PLACEMENT = (2, 1)  # (row, col) of the 28x28 box on the 34x34 sensor at rest
MAX_TIMESTAMP = 2**23 - 1  # N-MNIST's 23-bit timestamps
CHUNK = 128  # digits simulated together; fixed, so the random draws do not depend on it


def digits_split():
    """``(train_images, train_labels, test_images, test_labels)`` of the 8x8 digits, 0..16 float,
    split as ``jsnn.data.datasets.load_digits`` splits them."""
    images, labels = digits_arrays()
    images = images.astype(np.uint8).astype(np.float64)
    train, test = digits_split_indices()
    return images[train], labels[train], images[test], labels[test]


def zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` linear interpolation weights of ``scipy.ndimage.zoom(order=1)`` along one axis:
    output index o samples input coordinate ``o (n_in - 1) / (n_out - 1)`` (corners aligned)."""
    coord = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    low = np.minimum(np.floor(coord).astype(int), n_in - 2)
    frac = coord - low
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), low] = 1.0 - frac
    weights[np.arange(n_out), low + 1] += frac
    return weights


def glyph_canvases(images8: np.ndarray) -> np.ndarray:
    """``[N, 34, 34]`` intensities in [0, 1]: each 8x8 digit zoomed to 20x20, padded to 28x28, top-left."""
    images8 = np.asarray(images8, np.float64).reshape(-1, 8, 8)
    zoom = zoom_matrix(8, 20)  # x2.5, bilinear, as ndimage.zoom(image, 2.5, order=1) (tested)
    zoomed = np.clip(np.einsum("ij,njk,lk->nil", zoom, images8 / 16.0, zoom), 0.0, 1.0)
    canvases = np.zeros((len(images8), 34, 34))
    canvases[:, 4:24, 4:24] = zoomed
    return canvases


def saccade_offset(t_us: float) -> tuple[float, float]:
    """(dx, dy) of the image at time ``t_us`` along the three saccades (linear between waypoints)."""
    s = min(int(t_us // SACCADE_US), 2)
    f = t_us / SACCADE_US - s
    dx, dy = WAYPOINTS[s] + f * (WAYPOINTS[s + 1] - WAYPOINTS[s])
    return float(dx), float(dy)


PAD = 10  # margin around the canvas so every shift along the path is a slice (shifts are at most 9)
# The only pixels that ever change: the glyph's box, rows/cols 4..23 of the canvas, moved by
# 2..9 rows and 1..8 columns (PLACEMENT + WAYPOINTS), plus one pixel of interpolation. The rest
# of the sensor stays background and never fires (but for the noise), so it is not simulated.
ACTIVE_ROWS = (6, 34)
ACTIVE_COLS = (5, 33)


def shift_bilinear(padded: np.ndarray, rows: float, cols: float, out_rows=(0, 34), out_cols=(0, 34)) -> np.ndarray:
    """Canvases moved by (rows, cols) pixels, bilinearly: ``out[..., y, x] = canvas[..., y - rows, x - cols]``
    for y in ``range(*out_rows)``, x in ``range(*out_cols)``.

    ``padded`` holds the canvases with ``PAD`` zero pixels on every side, so each shift is a pair
    of slices and the interpolation two passes (columns, then rows) over a whole chunk of digits.
    Equals ``scipy.ndimage.shift(canvas, (rows, cols), order=1)`` up to rounding (tested) for
    shifts of at most ``PAD - 1`` pixels.
    """
    iy, ix = int(np.floor(rows)), int(np.floor(cols))
    fy, fx = rows - iy, cols - ix
    height, width = out_rows[1] - out_rows[0], out_cols[1] - out_cols[0]
    top, left = PAD + out_rows[0] - iy, PAD + out_cols[0] - ix  # canvas[y - iy, x - ix] in padded
    band = padded[..., top - 1:top + height, :]  # rows y - iy - 1 and y - iy
    at = band[..., left:left + width]
    rows_out = at + fx * (band[..., left - 1:left - 1 + width] - at) if fx else at.copy()
    lower = rows_out[..., 1:, :]
    return lower + fy * (rows_out[..., :-1, :] - lower) if fy else lower.copy()


def saccade_events(images8: np.ndarray, seed, *, contrast: float = 0.45, eps: float = 0.1,
                   dt_us: int = 1000, jitter_us: float = 50.0, noise_hz: float = 0.5,
                   thresholds: np.ndarray | None = None):
    """Events of every digit in ``images8`` ``[N, 8, 8]`` (values 0..16).

    Returns ``(x, y, t, p, offsets)``: digit i's events are ``[offsets[i], offsets[i + 1])``, sorted
    by time (ties in emission order); x, y int16, t int64 us, p uint8 (1 = ON). ``thresholds``
    ``[N, 34, 34]`` replaces the random contrast thresholds (tests use it with no jitter and no
    noise to compare against the note's per-digit loop).
    """
    images8 = np.asarray(images8, np.float64).reshape(-1, 8, 8)
    entropy = [int(s) for s in np.atleast_1d(seed)]  # an int or a sequence of ints
    parts = [_chunk_events(images8[start:start + CHUNK], np.random.default_rng(entropy + [start // CHUNK]),
                           contrast, eps, dt_us, jitter_us, noise_hz,
                           None if thresholds is None else thresholds[start:start + CHUNK])
             for start in range(0, len(images8), CHUNK)]
    counts = np.concatenate([np.bincount(part[0], minlength=len(part[5])) for part in parts]) if parts else []
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    x, y, t, p = (np.concatenate([part[i] for part in parts]) if parts else np.zeros(0) for i in range(1, 5))
    return x.astype(np.int16), y.astype(np.int16), t.astype(np.int64), p.astype(np.uint8), offsets


def _chunk_events(images8, rng, contrast, eps, dt_us, jitter_us, noise_hz, thresholds):
    n = len(images8)
    canvases = glyph_canvases(images8)
    if thresholds is None:
        thresholds = np.clip(rng.normal(contrast, 0.03, canvases.shape), 0.05, None)
    row0, col0 = PLACEMENT
    padded = np.pad(canvases, ((0, 0), (PAD, PAD), (PAD, PAD)))
    active = (slice(None), slice(*ACTIVE_ROWS), slice(*ACTIVE_COLS))
    active_shape = (n, ACTIVE_ROWS[1] - ACTIVE_ROWS[0], ACTIVE_COLS[1] - ACTIVE_COLS[0])
    thresholds_flat = np.ascontiguousarray(thresholds[active]).reshape(-1)

    def log_image(t_us):
        dx, dy = saccade_offset(t_us)
        image = shift_bilinear(padded, row0 + dy, col0 + dx, ACTIVE_ROWS, ACTIVE_COLS)
        image += eps
        return np.log(image, out=image).reshape(-1)

    duration = 3 * SACCADE_US
    reference = log_image(0)
    sample, xs, ys, ts, ps = [], [], [], [], []
    for t0 in range(0, duration, dt_us):
        change = log_image(t0 + dt_us)
        change -= reference
        # few pixels cross a threshold in a step: find them first, divide only there
        where = np.flatnonzero(np.abs(change) >= thresholds_flat)
        if len(where) == 0:
            continue
        d = change[where]
        thr = thresholds_flat[where]
        k = np.floor(np.abs(d) / thr).astype(np.int64)
        reference[where] += np.sign(d) * k * thr
        b, yy, xx = np.unravel_index(where, active_shape)
        yy, xx = yy + ACTIVE_ROWS[0], xx + ACTIVE_COLS[0]
        j = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k) + 1  # 1..k for each pixel

        def rep(a):
            return np.repeat(a, k)

        t = t0 + dt_us * j * rep(thr) / rep(np.abs(d))
        if jitter_us:
            t = t + rng.normal(0.0, jitter_us, len(t))
        sample.append(rep(b))
        xs.append(rep(xx))
        ys.append(rep(yy))
        ts.append(t)
        ps.append(rep(d > 0))
    if noise_hz:
        m = rng.poisson(noise_hz * 34 * 34 * duration * 1e-6, n)  # background noise events per digit
        total = int(m.sum())
        sample.append(np.repeat(np.arange(n), m))
        xs.append(rng.integers(0, 34, total))
        ys.append(rng.integers(0, 34, total))
        ts.append(rng.uniform(0, duration, total))
        ps.append(rng.integers(0, 2, total).astype(bool))
    if not ts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty, empty, canvases
    sample, x, y, t, p = (np.concatenate(a) for a in (sample, xs, ys, ts, ps))
    order = np.lexsort((t, sample))  # stable: ties keep emission order, as the note's stable argsort
    t = np.clip(np.round(t[order]), 0, MAX_TIMESTAMP)
    return sample[order], x[order], y[order], t, p[order], canvases
