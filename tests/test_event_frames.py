"""Events -> frames (jsnn/data/events/frames.py) against tonic's transforms and plain NumPy loops."""
import numpy as np
import pytest

from jsnn.data.events.frames import FrameSettings, count_bins, denoise_mask, frame_counts, frame_events, frame_shape
from tests.optional import Optional

tonic_transforms = Optional("tonic.transforms")  # the tests that compare against tonic skip without it

DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])
TONIC_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])  # tonic NMNIST.dtype


def random_events(n, width, height, seed, duration=100_000, start=1_000):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["t"] = np.sort(rng.integers(start, start + duration, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


def as_tonic(ev):
    out = np.zeros(len(ev), TONIC_DTYPE)
    for name in ("x", "y", "t", "p"):
        out[name] = ev[name]
    return out


def tonic_frames(frames_tpHW):
    """tonic's (T, P, H, W) -> ours (T, H, W, P)."""
    return np.transpose(frames_tpHW, (0, 2, 3, 1))


def loop_frames(ev, sensor_size, bins, height, width, mapx=lambda x: x, mapy=lambda y: y):
    """A plain per-event loop: counts[bin, y', x', p] += 1."""
    counts = np.zeros((bins.max() + 1 if len(bins) else 1, height, width, 2), np.int64)
    for e, b in zip(ev, bins):
        if b >= 0:
            counts[b, mapy(int(e["y"])), mapx(int(e["x"])), int(e["p"])] += 1
    return counts


@pytest.mark.parametrize("seed", [0, 1])
def test_time_bins_equal_tonic_n_time_bins(seed):
    sensor = (34, 30, 2)  # W != H, so a swapped axis shows
    ev = random_events(5000, 34, 30, seed)
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), sensor, FrameSettings(timesteps=7))
    theirs = tonic_transforms.ToFrame(sensor_size=sensor, n_time_bins=7)(as_tonic(ev))
    np.testing.assert_array_equal(ours, tonic_frames(theirs))
    # and a loop over events with the window written out
    window = (int(ev["t"][-1]) - int(ev["t"][0])) // 7
    bins = np.array([(int(t) - int(ev["t"][0])) // window for t in ev["t"]])
    bins[bins >= 7] = -1
    np.testing.assert_array_equal(ours, loop_frames(ev, sensor, bins, 30, 34)[:7])
    assert ours.sum() < len(ev)  # like tonic, the tail past T whole windows is dropped (at least the last event)


def test_time_bins_keep_everything_when_duration_divides():
    # duration = T * window + 0: only the very last event falls outside, as in tonic
    ev = random_events(400, 8, 8, 3, duration=4000, start=0)
    ev["t"][0], ev["t"][-1] = 0, 4000
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), (8, 8, 2), FrameSettings(timesteps=4))
    theirs = tonic_transforms.ToFrame(sensor_size=(8, 8, 2), n_time_bins=4)(as_tonic(ev))
    np.testing.assert_array_equal(ours, tonic_frames(theirs))
    assert ours.sum() == len(ev) - np.count_nonzero(ev["t"] == 4000)


def test_time_bins_of_a_recording_shorter_than_t_ticks_are_not_empty():
    # tonic's quirk: window = duration // T = 0 -> every frame zero. Ours uses a window of 1 tick.
    ev = random_events(50, 6, 6, 4, duration=3)
    ev["t"][0], ev["t"][-1] = 1000, 1002
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), (6, 6, 2), FrameSettings(timesteps=5))
    theirs = tonic_transforms.ToFrame(sensor_size=(6, 6, 2), n_time_bins=5)(as_tonic(ev))
    assert theirs.sum() == 0
    per_tick = [np.count_nonzero(ev["t"] == 1000 + i) for i in range(3)]
    np.testing.assert_array_equal(ours.sum(axis=(1, 2, 3))[:3], per_tick)


@pytest.mark.parametrize("n", [5000, 5003])
def test_count_bins_equal_tonic_n_event_bins_but_keep_the_remainder(n):
    sensor = (34, 30, 2)
    ev = random_events(n, 34, 30, 5)
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), sensor, FrameSettings(timesteps=4, slicing="count"))
    theirs = tonic_frames(tonic_transforms.ToFrame(sensor_size=sensor, n_event_bins=4)(as_tonic(ev)))
    np.testing.assert_array_equal(ours[:3], theirs[:3])
    remainder = n % 4  # tonic drops the last n mod T events; we put them in the last bin (SpikingJelly)
    tail = np.zeros_like(ours[3])
    for e in ev[len(ev) - remainder:]:
        tail[e["y"], e["x"], e["p"]] += 1
    np.testing.assert_array_equal(ours[3], theirs[3] + tail)
    assert ours.sum() == n and theirs.sum() == n - remainder
    np.testing.assert_array_equal(count_bins(10, 3), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # by hand


@pytest.mark.parametrize("sensor,size", [((34, 34, 2), (17, 17)), ((128, 128, 2), (48, 48)), ((128, 128, 2), (32, 32))])
def test_resize_equals_tonic_downsample_then_toframe(sensor, size):
    ev = random_events(20000, sensor[0], sensor[1], 6)
    factor = size[1] / sensor[0]  # 0.5, 0.375 (uneven 3, 3, 2 pooling), 0.25
    down = tonic_transforms.Downsample(spatial_factor=factor)(as_tonic(ev))
    theirs = tonic_frames(tonic_transforms.ToFrame(sensor_size=(size[1], size[0], 2), n_time_bins=3)(down))
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), sensor, FrameSettings(timesteps=3, size=size))
    np.testing.assert_array_equal(ours, theirs)
    if size == (32, 32):  # a 4x4 sum-pool of the full-resolution frames
        full = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), sensor, FrameSettings(timesteps=3))
        np.testing.assert_array_equal(ours, full.reshape(3, 32, 4, 32, 4, 2).sum(axis=(2, 4)))


@pytest.mark.parametrize("crop", [(20, 24), (21, 17)])
def test_centre_crop_equals_tonic(crop):
    sensor = (34, 30, 2)
    ev = random_events(5000, 34, 30, 7)
    # tonic's size is (w, h) in its code, whatever its docstring says
    cropped = tonic_transforms.CenterCrop(sensor_size=sensor, size=(crop[1], crop[0]))(as_tonic(ev))
    theirs = tonic_frames(tonic_transforms.ToFrame(sensor_size=(crop[1], crop[0], 2), n_time_bins=2,
                                                   start_time=int(ev["t"][0]), end_time=int(ev["t"][-1]))(cropped))
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), sensor, FrameSettings(timesteps=2, crop=crop))
    np.testing.assert_array_equal(ours, theirs)
    assert frame_shape(sensor, FrameSettings(timesteps=2, crop=crop)) == (2,) + crop + (2,)


def denoise_loop(ev, filter_time, width, height):
    """tonic's Denoise written out: per-pixel memory, neighbours within the sensor."""
    memory = np.full((width, height), filter_time, np.int64)
    keep = []
    for e in ev:
        x, y, t = int(e["x"]), int(e["y"]), int(e["t"])
        memory[x, y] = t + filter_time
        keep.append((x > 0 and memory[x - 1, y] > t) or (x < width - 1 and memory[x + 1, y] > t)
                    or (y > 0 and memory[x, y - 1] > t) or (y < height - 1 and memory[x, y + 1] > t))
    return np.array(keep)


@pytest.mark.parametrize("seed,filter_time", [(8, 3000), (9, 700)])
def test_denoise_equals_tonic_and_a_loop(seed, filter_time):
    ev = random_events(3000, 16, 12, seed, start=0)
    ev["t"][:40] = np.sort(ev["t"][:40]) % 5  # several events at the same tick, stream order decides
    ev = ev[np.argsort(ev["t"], kind="stable")]
    mask = denoise_mask(ev["x"], ev["y"], ev["t"], filter_time)
    theirs = tonic_transforms.Denoise(filter_time=filter_time)(as_tonic(ev))
    np.testing.assert_array_equal(as_tonic(ev[mask]), theirs)
    np.testing.assert_array_equal(mask, denoise_loop(ev, filter_time, 16, 12))
    assert mask[ev["t"] < filter_time].all() and 0 < mask.sum() < len(ev)
    # through frame_counts: the same frames as tonic Denoise -> ToFrame
    ours = frame_counts(*(ev[k].astype(np.int64) for k in "xytp"), (16, 12, 2),
                        FrameSettings(timesteps=3, filter_time=filter_time, slicing="count"))
    kept = ev[mask]
    bins = count_bins(len(kept), 3)
    np.testing.assert_array_equal(ours, loop_frames(kept, None, bins, 12, 16))


def test_denoise_uses_the_latest_event_in_stream_order_not_the_latest_time():
    # unsorted timestamps: tonic's memory holds the last event's t, not the largest t
    ev = np.zeros(3, DTYPE)
    ev["x"], ev["y"], ev["t"] = [0, 0, 1], [0, 0, 0], [50_000, 20_000, 30_000]
    mask = denoise_mask(ev["x"], ev["y"], ev["t"], 5_000)
    theirs = tonic_transforms.Denoise(filter_time=5_000)(as_tonic(ev))
    np.testing.assert_array_equal(as_tonic(ev[mask]), theirs)
    np.testing.assert_array_equal(mask, [False, False, False])
    ev["t"][2] = 24_000  # now within 5 ms of the neighbour's latest (20 ms) event
    np.testing.assert_array_equal(denoise_mask(ev["x"], ev["y"], ev["t"], 5_000), [False, False, True])


def test_frame_events_channels_storage_and_binarise():
    ev = np.zeros(600, DTYPE)
    ev["x"], ev["y"], ev["p"] = 3, 1, 1
    ev["t"] = np.arange(600)
    ev[-1]["p"] = 0
    frames = frame_events(ev, (5, 4, 2), FrameSettings(timesteps=1, slicing="count"))
    assert frames.dtype == np.uint8 and frames.shape == (1, 4, 5, 2)
    assert frames[0, 1, 3, 1] == 255 and frames[0, 1, 3, 0] == 1  # 599 ON events saturate; channel 0 = OFF
    assert frames.sum() == 256
    binary = frame_events(ev, (5, 4, 2), FrameSettings(timesteps=1, slicing="count", binarise=True))
    np.testing.assert_array_equal(binary, np.minimum(frames, 1))
    empty = frame_events(ev[:0], (5, 4, 2), FrameSettings(timesteps=3))
    assert empty.shape == (3, 4, 5, 2) and empty.sum() == 0


def test_bad_settings_and_events_get_one_line():
    with pytest.raises(ValueError, match="slicing"):
        FrameSettings(timesteps=4, slicing="window")
    with pytest.raises(ValueError, match="timesteps"):
        FrameSettings(timesteps=0)
    with pytest.raises(ValueError, match="crop"):
        FrameSettings(timesteps=2, crop=(3,))
    assert FrameSettings(timesteps=2, size=[4, 4]) == FrameSettings(timesteps=2, size=(4, 4))
    ev = random_events(10, 8, 8, 0)
    with pytest.raises(ValueError, match="outside the 4x8 sensor"):
        frame_events(ev, (4, 8, 2), FrameSettings(timesteps=2))
