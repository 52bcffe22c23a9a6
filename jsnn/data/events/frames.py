"""Events -> frames: ``[T, H, W, 2]`` uint8 counts per sample, vectorised NumPy.

The steps, in this order (the order tonic pipelines use: ``Denoise`` -> ``Downsample`` ->
``CenterCrop`` -> ``ToFrame``, as tonic and SpikingJelly do):

1. ``denoise``: keep an event only if one of its 4 neighbours fired within the previous
   ``filter_time`` (tonic ``Denoise`` semantics, including that every event with
   ``t < filter_time`` passes), in one sort instead of a Python loop per event.
2. ``resize``: coordinates mapped by ``x * W' // W`` (tonic ``Downsample(spatial_factor=W'/W)``:
   coordinates times the factor, truncated), so counts are sum-pooled, never dropped.
3. ``centre crop``: events inside the centred box, shifted (tonic ``CenterCrop`` offsets).
4. slicing into T bins: ``"time"``, T equal time windows as tonic ``ToFrame(n_time_bins=T)``
   (window ``(t_last - t_first) // T``, events at or after ``t_first + T * window`` dropped, so at
   least the last one: what spyx's N-MNIST loader trains on); ``"count"``, T bins of
   ``N // T`` events as tonic ``ToFrame(n_event_bins=T)`` except that the last ``N mod T``
   events go into the last bin instead of being dropped (SpikingJelly's ``split_by="number"``,
   which the DVS Gesture and CIFAR10-DVS papers of the note's table use).
5. counts stored saturating at 255 (uint8), or clipped to 1 when ``binarise``.

Channels last; channel 0 = OFF (p = 0), channel 1 = ON (p = 1).
"""
from __future__ import annotations

import dataclasses

import numpy as np

SLICING_MODES = ("time", "count")


@dataclasses.dataclass(frozen=True)
class FrameSettings:
    """How one dataset's events become frames; every field is part of the cache key.

    Attributes:
      timesteps: T, the number of frames per sample.
      slicing: ``"time"`` (T equal time windows, tonic ``ToFrame(n_time_bins=T)``) or ``"count"``
        (T equal event counts, tonic ``ToFrame(n_event_bins=T)`` / SpikingJelly ``split_by="number"``).
      size: (height, width) after resizing by sum-pooling events (``x * width // sensor width``,
        tonic ``Downsample``); a factor k is ``size = sensor / k``. None keeps the sensor's size.
      crop: (height, width) of a centre crop taken after resizing; None = no crop.
      filter_time: tonic ``Denoise(filter_time)`` in microseconds, applied first; 0 = off.
      binarise: frames hold 1 where a pixel had any event of that polarity in the bin.
    """

    timesteps: int
    slicing: str = "time"
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    filter_time: int = 0
    binarise: bool = False

    def __post_init__(self):
        if not (isinstance(self.timesteps, (int, np.integer)) and self.timesteps >= 1):
            raise ValueError(f"frames: timesteps must be a positive integer, got {self.timesteps!r}")
        if self.slicing not in SLICING_MODES:
            raise ValueError(f"frames: slicing must be one of {SLICING_MODES}, got {self.slicing!r}")
        for field in ("size", "crop"):
            value = getattr(self, field)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 2 or min(value) < 1:
                    raise ValueError(f"frames: {field} must be (height, width) >= 1, got {getattr(self, field)!r}")
                object.__setattr__(self, field, value)  # lists from JSON/flags -> one hashable form
        if self.filter_time < 0:
            raise ValueError(f"frames: filter_time must be >= 0 microseconds, got {self.filter_time}")

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def frame_shape(sensor_size: tuple[int, int, int], settings: FrameSettings) -> tuple[int, int, int, int]:
    """``(T, H, W, 2)`` of the frames of a sensor of ``sensor_size = (W, H, P)``."""
    height, width = _spatial_size(sensor_size, settings)
    if settings.crop is not None:
        height, width = settings.crop
    return settings.timesteps, height, width, 2


def _spatial_size(sensor_size, settings):
    width, height = int(sensor_size[0]), int(sensor_size[1])
    return settings.size if settings.size is not None else (height, width)


def denoise_mask(x: np.ndarray, y: np.ndarray, t: np.ndarray, filter_time: int) -> np.ndarray:
    """Which events tonic ``Denoise(filter_time)`` keeps, without a loop over events.

    tonic walks the events in stream order with a per-pixel memory that starts at ``filter_time``
    and is set to ``t + filter_time`` at each event; an event is kept when a 4-neighbour's memory
    is above its ``t``. So an event is kept if ``t < filter_time`` (a neighbour that never fired
    still holds ``filter_time``; t >= 0), or if the latest earlier event (in stream order) at one of
    its neighbours has ``t_prev + filter_time > t``. The latest earlier event at pixel q before
    event i is found with one ``searchsorted`` over the events sorted by (pixel, position).
    (tonic bounds the neighbours by the largest x and y present rather than the sensor; the two
    agree except on a sensor one pixel wide.)
    """
    x, y, t = (np.asarray(a, np.int64) for a in (x, y, t))
    n = len(t)
    if n == 0 or filter_time <= 0:
        return np.ones(n, bool)
    width = int(x.max()) + 2  # +1 column of padding so x + 1 never wraps onto the next row
    pixel = y * width + x
    position = np.arange(n, dtype=np.int64)
    order = np.argsort(pixel, kind="stable")  # within a pixel, stream order
    key = pixel[order] * n + position[order]  # sorted: by pixel, then position
    keep = t < filter_time
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nx, ny = x + dx, y + dy
        inside = (nx >= 0) & (ny >= 0)
        neighbour = ny * width + nx
        found = np.searchsorted(key, neighbour * n + position) - 1  # last key below (q, i)
        found_ok = inside & (found >= 0)
        found_ok[found_ok] &= key[found[found_ok]] // n == neighbour[found_ok]
        t_prev = t[order[np.where(found_ok, found, 0)]]
        keep |= found_ok & (t_prev + filter_time > t)
    return keep


def frame_events(events: np.ndarray, sensor_size: tuple[int, int, int], settings: FrameSettings) -> np.ndarray:
    """One sample's events (a structured array with fields x, y, t, p) -> uint8 ``[T, H, W, 2]``."""
    x = np.asarray(events["x"], np.int64)
    y = np.asarray(events["y"], np.int64)
    t = np.asarray(events["t"], np.int64)
    p = np.asarray(events["p"], np.int64)
    counts = frame_counts(x, y, t, p, sensor_size, settings)
    return to_storage(counts, settings.binarise)


def to_storage(counts: np.ndarray, binarise: bool) -> np.ndarray:
    """int counts -> uint8, saturating at 255 (or at 1 when ``binarise``)."""
    return np.minimum(counts, 1 if binarise else 255).astype(np.uint8)


def frame_counts(x, y, t, p, sensor_size, settings: FrameSettings) -> np.ndarray:
    """Event counts ``[T, H, W, 2]`` (int64) after denoise, resize, crop and slicing."""
    sensor_width, sensor_height = int(sensor_size[0]), int(sensor_size[1])
    if len(t) and (x.min() < 0 or y.min() < 0 or x.max() >= sensor_width or y.max() >= sensor_height):
        raise ValueError(f"frames: events outside the {sensor_width}x{sensor_height} sensor "
                         f"(x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}])")
    if settings.filter_time > 0:
        keep = denoise_mask(x, y, t, settings.filter_time)
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    height, width = _spatial_size(sensor_size, settings)
    if settings.size is not None:
        x = x * width // sensor_width
        y = y * height // sensor_height
    if settings.crop is not None:
        crop_height, crop_width = settings.crop
        # tonic CenterCrop: offset (size - crop) // 2, negative (a crop larger than the sensor) pads
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        x, y = x - left, y - top
        inside = (x >= 0) & (x < crop_width) & (y >= 0) & (y < crop_height)
        x, y, t, p = x[inside], y[inside], t[inside], p[inside]
        height, width = crop_height, crop_width
    steps = settings.timesteps
    bins = time_bins(t, steps) if settings.slicing == "time" else count_bins(len(t), steps)
    kept = bins >= 0
    flat = ((bins * height + y) * width + x) * 2 + (p != 0)
    counts = np.bincount(flat[kept], minlength=steps * height * width * 2)
    return counts.reshape(steps, height, width, 2)


def time_bins(t: np.ndarray, steps: int) -> np.ndarray:
    """Bin of each event for T equal time windows; -1 = dropped (tonic ``n_time_bins`` semantics).

    The window is ``(t_last - t_first) // T`` as in tonic, with one difference: tonic makes every
    frame empty when the recording is shorter than T ticks (window 0); here the window is then 1.
    """
    t = np.asarray(t, np.int64)
    if len(t) == 0:
        return np.zeros(0, np.int64)
    start = t[0]
    window = max((int(t[-1]) - int(start)) // steps, 1)
    bins = (t - start) // window
    return np.where((bins >= 0) & (bins < steps), bins, -1)


def count_bins(n: int, steps: int) -> np.ndarray:
    """Bin of each of ``n`` events for T bins of ``n // T`` events, the remainder in the last bin
    (SpikingJelly ``split_by="number"``; tonic ``n_event_bins`` drops the remainder instead)."""
    per_bin = max(n // steps, 1)
    return np.minimum(np.arange(n, dtype=np.int64) // per_bin, steps - 1)
