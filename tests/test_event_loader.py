"""The frame cache, the event dataset loader on tiny made-up datasets in each on-disk layout,
augmentation of frames and gathering batches from memmaps."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data
from jsnn.data import AugmentConfig, DataNotFoundError, FrameSettings
from jsnn.data.augment import apply_augment, sample_augment_params
from jsnn.data.events import cache, writers
from jsnn.data.events.readers import make_events
from tests.reference import loop_event_frames


@pytest.fixture(autouse=True)
def no_cache_env(monkeypatch, tmp_path):
    """No $JSNN_CACHE_DIR unless a test sets one, and a user cache inside tmp_path."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))


def one_line(err):
    return "\n" not in str(err.value)


# ------------------------------------------------------------------------------- the cache


def filler(calls, value=7, fail_after=None):
    def fill(split, frames, labels):
        calls.append(split)
        for i in range(len(frames)):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt("killed mid-build")
            frames[i] = value + i
            labels[i] = i % 3
    return fill


SHAPES = {"train": (5, 2, 3, 3, 2), "test": (2, 2, 3, 3, 2)}


def test_cache_builds_once_then_reads_memmaps(tmp_path):
    calls = []
    desc = {"dataset": "x", "frames": {"timesteps": 2}}
    splits, path = cache.load_or_build(str(tmp_path), desc, SHAPES, filler(calls))
    assert calls == ["train", "test"] and path == str(tmp_path / "jsnn_frames" / cache.cache_key(desc))
    frames, labels = splits["train"]
    assert isinstance(frames, np.memmap) and frames.mode == "r" and frames.shape == SHAPES["train"]
    np.testing.assert_array_equal(frames[:, 0, 0, 0, 0], 7 + np.arange(5))
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
    assert labels.dtype == np.int32
    again, path2 = cache.load_or_build(str(tmp_path), {"frames": {"timesteps": 2}, "dataset": "x"}, SHAPES,
                                       filler(calls))
    assert calls == ["train", "test"] and path2 == path  # key order does not matter; not rebuilt
    assert sorted(os.listdir(path)) == ["meta.json", "test_frames.npy", "test_labels.npy", "train_frames.npy",
                                        "train_labels.npy"]


def test_cache_key_changes_with_every_parameter():
    base = {"dataset": "nmnist", "frames": FrameSettings(timesteps=4).to_json(), "sources": {"train": [["a", 5, 1]]}}
    keys = {cache.cache_key(base)}
    for changed in ({"frames": FrameSettings(timesteps=5).to_json()},
                    {"frames": FrameSettings(timesteps=4, slicing="count").to_json()},
                    {"frames": FrameSettings(timesteps=4, filter_time=1).to_json()},
                    {"frames": FrameSettings(timesteps=4, binarise=True).to_json()},
                    {"frames": FrameSettings(timesteps=4, size=(17, 17)).to_json()},
                    {"frames": FrameSettings(timesteps=4, crop=(30, 30)).to_json()},
                    {"sources": {"train": [["a", 6, 1]]}},  # a file's size
                    {"dataset": "digits_dvs"}):
        keys.add(cache.cache_key({**base, **changed}))
    assert len(keys) == 9 and all(len(k) == 40 for k in keys)


def test_an_interrupted_build_leaves_nothing_that_is_reused(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        cache.load_or_build(str(tmp_path), {"d": 1}, SHAPES, filler(calls, fail_after=3))
    assert os.listdir(tmp_path / "jsnn_frames") == []  # neither the entry nor its temporary folder
    def fail_in_test_split(split, frames, labels):
        if split == "test":
            raise RuntimeError("bad file")
        filler([])(split, frames, labels)

    with pytest.raises(RuntimeError):  # an error in the second split: the first split's files go too
        cache.load_or_build(str(tmp_path), {"d": 1}, SHAPES, fail_in_test_split)
    assert os.listdir(tmp_path / "jsnn_frames") == []
    calls.clear()
    splits, _ = cache.load_or_build(str(tmp_path), {"d": 1}, SHAPES, filler(calls))
    assert calls == ["train", "test"] and splits["train"][0][4, 0, 0, 0, 0] == 11


def test_a_build_that_loses_the_race_uses_the_winners_entry(tmp_path):
    def fill_and_meanwhile_another_process_finishes(split, frames, labels):
        if split == "train":  # another process builds the same key while this one is busy
            cache.load_or_build(str(tmp_path), {"d": 2}, SHAPES, filler([], value=100))
        filler([], value=1)(split, frames, labels)

    splits, path = cache.load_or_build(str(tmp_path), {"d": 2}, SHAPES, fill_and_meanwhile_another_process_finishes)
    assert splits["train"][0][0, 0, 0, 0, 0] == 100
    assert os.listdir(tmp_path / "jsnn_frames") == [os.path.basename(path)]


def test_a_damaged_entry_says_delete_it(tmp_path):
    _, path = cache.load_or_build(str(tmp_path), {"d": 3}, SHAPES, filler([]))
    with open(os.path.join(path, "train_frames.npy"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataNotFoundError, match="damaged frame cache.*delete that folder") as err:
        cache.load_or_build(str(tmp_path), {"d": 3}, SHAPES, filler([]))
    assert one_line(err)


def test_cache_directory_choice(tmp_path, monkeypatch):
    # a data dir that cannot hold a folder (here: it is a file) -> the user cache
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    _, path = cache.load_or_build(str(not_a_dir), {"d": 4}, SHAPES, filler([]))
    assert path.startswith(str(tmp_path / "user_cache" / "jsnn"))
    assert cache.cache_dirs(None) == [str(tmp_path / "user_cache" / "jsnn")]
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    _, path = cache.load_or_build(str(tmp_path / "data"), {"d": 4}, SHAPES, filler([]))
    assert path.startswith(str(tmp_path / "env"))


# ----------------------------------------------------------------------- made-up datasets


def random_events(rng, n, width, height, t_max=300_000, t_step=1):
    t = np.sort(rng.integers(0, t_max // t_step, n)) * t_step
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n))


def check_split(images, labels, expected, settings, sensor):
    assert images.dtype == np.uint8 and isinstance(images, np.memmap) and labels.dtype == np.int32
    assert len(images) == len(expected)
    for i, (events, label) in enumerate(expected):
        assert settings.filter_time == 0  # the loop reference does not denoise
        expected_frames = loop_event_frames(events, sensor, settings.timesteps, settings.slicing, settings.size,
                                            settings.crop, settings.binarise)
        np.testing.assert_array_equal(images[i], expected_frames)
        assert labels[i] == label


def test_nmnist_from_its_folders(tmp_path):
    rng = np.random.default_rng(0)
    expected = {"train": [], "test": []}
    for split, folder in (("train", "Train"), ("test", "Test")):
        for digit in (0, 3, 9):  # the natural order of folders, then of files
            for name in ("00002.bin", "00010.bin"):
                path = tmp_path / "NMNIST" / folder / str(digit) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                ev = random_events(rng, 300, 34, 34)
                writers.write_nmnist_bin(path, ev)
                expected[split].append((ev, digit))
    ds = data.load_dataset("nmnist", str(tmp_path))
    settings = data.default_frame_settings("nmnist")
    assert settings == FrameSettings(timesteps=10, slicing="time")
    assert ds.train_images.shape == (6, 10, 34, 34, 2) and ds.timesteps == 10 and ds.frame_shape == (34, 34, 2)
    check_split(ds.train_images, ds.train_labels, expected["train"], settings, (34, 34, 2))
    check_split(ds.test_images, ds.test_labels, expected["test"], settings, (34, 34, 2))
    assert ds.mean == (0.0, 0.0) and ds.std == (1.0, 1.0) and ds.augment == AugmentConfig()
    assert os.path.dirname(ds.train_images.filename).startswith(str(tmp_path / "jsnn_frames"))
    # other settings: another cache entry, other shapes
    small = FrameSettings(timesteps=3, slicing="count", size=(17, 17), binarise=True)
    ds3 = data.load_dataset("nmnist", str(tmp_path), frames=small)
    assert ds3.train_images.shape == (6, 3, 17, 17, 2) and ds3.train_images.max() == 1
    check_split(ds3.train_images, ds3.train_labels, expected["train"], small, (34, 34, 2))
    assert len(os.listdir(tmp_path / "jsnn_frames")) == 2
    # a file added: the source list changed, so the frames are built again
    extra = random_events(rng, 50, 34, 34)
    writers.write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "9" / "00011.bin", extra)
    ds4 = data.load_dataset("nmnist", str(tmp_path))
    assert len(ds4.train_images) == 7 and ds4.train_labels[-1] == 9
    assert len(os.listdir(tmp_path / "jsnn_frames")) == 3


def test_dvs_gesture_tonic_npy_layout(tmp_path):
    rng = np.random.default_rng(1)
    expected = {"train": [], "test": []}
    for split, folder in (("train", "ibmGestureTrain"), ("test", "ibmGestureTest")):
        for user in ("user02_led", "user10_fluorescent"):
            for label in (0, 10):
                path = tmp_path / "DVSGesture" / folder / user / f"{label}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                ev = random_events(rng, 500, 128, 128, t_max=2_000_000, t_step=1000)  # tonic stores whole ms
                writers.write_dvs_gesture_npy(path, ev)
                expected[split].append((ev, label))
    ds = data.load_dataset("dvs_gesture", str(tmp_path))
    settings = data.default_frame_settings("dvs_gesture")
    assert settings == FrameSettings(timesteps=16, slicing="count", size=(64, 64))
    assert ds.train_images.shape == (4, 16, 64, 64, 2) and ds.num_classes == 11
    check_split(ds.train_images, ds.train_labels, expected["train"], settings, (128, 128, 2))
    check_split(ds.test_images, ds.test_labels, expected["test"], settings, (128, 128, 2))
    assert ds.augment == AugmentConfig()  # no flip: left/right gestures are different classes


def test_dvs_gesture_original_recordings(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "DvsGesture"
    base.mkdir()
    recordings = {}
    for name in ("user01_led", "user02_natural"):
        ev = random_events(rng, 2000, 128, 128, t_max=3_000_000)
        writers.write_aedat31_gesture(base / f"{name}.aedat", ev, packet_events=500)
        rows = [(4, 100_000, 1_000_000), (7, 1_200_000, 2_500_000)]
        writers.write_dvs_gesture_labels(base / f"{name}_labels.csv", rows)
        recordings[name] = (ev, rows)
    (base / "trials_to_train.txt").write_text("user01_led.aedat\n")
    (base / "trials_to_test.txt").write_text("user02_natural.aedat\n")
    settings = FrameSettings(timesteps=4, slicing="time", size=(32, 32))
    ds = data.load_dataset("dvs_gesture", str(tmp_path), frames=settings)

    def cuts(name):
        ev, rows = recordings[name]
        return [(ev[(ev["t"] >= start) & (ev["t"] < end)], label) for label, start, end in rows]

    check_split(ds.train_images, ds.train_labels, cuts("user01_led"), settings, (128, 128, 2))
    check_split(ds.test_images, ds.test_labels, cuts("user02_natural"), settings, (128, 128, 2))


@pytest.mark.parametrize("suffix", [".aedat", ".aedat4"])
def test_cifar10_dvs_tebn_split(tmp_path, suffix):
    if suffix == ".aedat4":
        pytest.importorskip("aedat")
    rng = np.random.default_rng(3)
    expected = {"train": [], "test": []}
    for label, cls in ((0, "airplane"), (9, "truck")):
        folder = tmp_path / "CIFAR10DVS" / cls
        folder.mkdir(parents=True)
        for number in (3, 150, 99, 100):  # TEBN: 0-99 test, 100-999 train, in natural order
            ev = random_events(rng, 400, 128, 128)
            path = folder / f"cifar10_{cls}_{number}{suffix}"
            if suffix == ".aedat":
                writers.write_aedat2_cifar10dvs(path, ev)
            else:
                writers.write_aedat4(path, ev)
            expected["test" if number < 100 else "train"].append((number, ev, label))
    ds = data.load_dataset("cifar10_dvs", str(tmp_path))
    settings = data.default_frame_settings("cifar10_dvs")
    assert settings == FrameSettings(timesteps=10, slicing="count", size=(48, 48))
    assert ds.augment == AugmentConfig(crop_padding=5, flip=True)
    for split, images, labels in (("train", ds.train_images, ds.train_labels), ("test", ds.test_images,
                                                                                    ds.test_labels)):
        ordered = [(ev, label) for _, ev, label in sorted(expected[split], key=lambda e: (e[2], e[0]))]
        check_split(images, labels, ordered, settings, (128, 128, 2))
    assert ds.train_images.shape == (4, 10, 48, 48, 2)


def test_missing_and_damaged_data_get_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="NMNIST") as err:
        data.load_dataset("nmnist", str(tmp_path))
    assert one_line(err) and "--data-dir" in str(err.value)
    for split in ("Train", "Test"):
        (tmp_path / "NMNIST" / split / "1").mkdir(parents=True)
        writers.write_nmnist_bin(tmp_path / "NMNIST" / split / "1" / "00001.bin",
                                 random_events(np.random.default_rng(4), 100, 34, 34))
    bad = tmp_path / "NMNIST" / "Test" / "1" / "00002.bin"
    bad.write_bytes(b"\x01\x02\x03")  # not a whole 5-byte record
    with pytest.raises(DataNotFoundError, match="00002.bin") as err:
        data.load_dataset("nmnist", str(tmp_path))
    assert one_line(err)
    assert [n for n in os.listdir(tmp_path / "jsnn_frames")] == []  # the failed build left nothing
    # events outside the sensor: a file of another dataset
    writers.write_nmnist_bin(bad, make_events([40], [3], [10], [1]))
    with pytest.raises(DataNotFoundError, match="damaged nmnist sample .*00002.bin.*outside") as err:
        data.load_dataset("nmnist", str(tmp_path))
    assert one_line(err)
    bad.unlink()
    assert len(data.load_dataset("nmnist", str(tmp_path)).test_images) == 1


def test_names_and_defaults():
    assert set(data.EVENT_DATASETS) == {"digits_dvs", "nmnist", "dvs_gesture", "cifar10_dvs"}
    assert set(data.EVENT_DATASETS) <= set(data.DATASET_NAMES)
    assert data.default_frame_settings("nmnist", 40).timesteps == 40
    assert data.default_frame_settings("digits_dvs") == FrameSettings(timesteps=4, size=(8, 8))
    with pytest.raises(ValueError, match="cifar10_dvs"):
        data.default_frame_settings("mnist_dvs")
    with pytest.raises(ValueError, match="digits_dvs"):
        data.load_dataset("mnist_dvs")


# -------------------------------------------------------------------------- augmentation


def augment_loop(frames, params, config):
    """NumPy: the same zero-padded crop, flip and Cutout for every frame of a sample."""
    out = np.array(frames)
    pad, (height, width) = config.crop_padding, frames.shape[2:4]
    for b in range(len(frames)):
        sample = out[b]
        if pad:
            padded = np.pad(sample, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            r, c = np.asarray(params.crop_offsets[b])
            sample = padded[:, r:r + height, c:c + width]
        if config.flip and bool(params.flip[b]):
            sample = sample[:, :, ::-1]
        if config.cutout:
            cy, cx = np.asarray(params.cutout_centers[b])
            half = config.cutout // 2
            sample = sample.copy()
            sample[:, max(cy - half, 0):max(cy + half, 0), max(cx - half, 0):max(cx + half, 0)] = 0
        out[b] = sample
    return out


@pytest.mark.parametrize("config", [AugmentConfig(crop_padding=5, flip=True), AugmentConfig(cutout=4),
                                    AugmentConfig(crop_padding=2, flip=True, cutout=3)])
def test_augment_frames_same_draw_for_every_frame(config):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 5, (6, 3, 10, 12, 2)).astype(np.float32)
    params = sample_augment_params(jax.random.key(1), 6, 10, 12, config)
    augment = jax.jit(apply_augment, static_argnums=2)  # one compilation per input shape (op by op: 10x slower)
    ours = np.asarray(augment(jnp.asarray(frames), params, config))
    np.testing.assert_array_equal(ours, augment_loop(frames, params, config))
    for t in range(3):  # frame t augmented as an image batch with the same draws
        np.testing.assert_array_equal(ours[:, t], np.asarray(augment(jnp.asarray(frames[:, t]), params, config)))
    batch = jax.jit(lambda k, x: data.augment_batch(k, x, config))(jax.random.key(1), jnp.asarray(frames))
    np.testing.assert_array_equal(np.asarray(batch), ours)  # augment_batch draws the same params from the key


def test_augment_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        data.augment_batch(jax.random.key(0), jnp.zeros((2, 3, 4)), AugmentConfig(flip=True))


# ------------------------------------------------------------------------ batches


def test_gather_and_batches_from_a_memmap(tmp_path):
    rng = np.random.default_rng(6)
    array = rng.integers(0, 255, (50, 2, 3, 3, 2)).astype(np.uint8)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.uint8, shape=array.shape)
    mm[:] = array
    mm.flush()
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    idx = rng.permutation(50)[:17]
    got = data.gather(mm, idx)
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, array[idx])
    labels = np.arange(50, dtype=np.int32)
    for (a, la), (b, lb) in zip(data.train_batches(mm, labels, 8, seed=1, epoch=2),
                                data.train_batches(array, labels, 8, seed=1, epoch=2)):
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    evals = list(data.eval_batches(mm, labels, 16))
    assert all(type(x) is np.ndarray for x, _, _ in evals) and evals[-1][2] == 2
    np.testing.assert_array_equal(np.concatenate([x[:n] for x, _, n in evals]), array)
