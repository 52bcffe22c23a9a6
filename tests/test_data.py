"""Tests for jsnn.data: datasets, augmentation, batching (CPU, offline, fast)."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data
from jsnn.data import AugmentConfig

# ------------------------------------------------------------------ datasets


def test_digits_are_scikit_learns_split_as_train_test_split_gives_it():
    """The digits are read from scikit-learn's CSV without importing it, and split by stored indices: the same
    arrays, in the same order, as scikit-learn's load_digits and train_test_split (the digits runs' data until
    then)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=0)
    ds = data.load_dataset("digits")
    for ours, theirs in ((ds.train_images, train_x), (ds.test_images, test_x), (ds.train_labels, train_y),
                         (ds.test_labels, test_y)):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_digits_loads_offline_with_fixed_stratified_split():
    ds = data.load_dataset("digits")
    assert ds.train_images.shape == (1437, 8, 8, 1)
    assert ds.test_images.shape == (360, 8, 8, 1)
    assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32
    assert ds.num_classes == 10
    assert ds.train_images.max() <= 16
    assert ds.augment == AugmentConfig()  # no crop, no flip for digits
    # Fixed: loading again gives the very same arrays.
    again = data.load_dataset("digits")
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    np.testing.assert_array_equal(ds.test_labels, again.test_labels)
    # Stratified: each class's share of the test set matches the train set.
    train_frac = np.bincount(ds.train_labels, minlength=10) / len(ds.train_labels)
    test_frac = np.bincount(ds.test_labels, minlength=10) / len(ds.test_labels)
    np.testing.assert_allclose(train_frac, test_frac, atol=0.01)
    # Stats in raw units, from the train images.
    flat = ds.train_images.reshape(-1, 1).astype(np.float64)
    np.testing.assert_allclose(ds.mean, flat.mean(0))
    np.testing.assert_allclose(ds.std, flat.std(0))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar100"):
        data.load_dataset("imagenet")


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_through_tfds_mock(name, num_classes, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset(name, data_dir=str(tmp_path))
    assert ds.train_images.shape == (12, 32, 32, 3)
    assert ds.test_images.shape == (12, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32
    assert ds.num_classes == num_classes
    assert 0 <= ds.train_labels.min() and ds.train_labels.max() < num_classes
    assert ds.augment == AugmentConfig(crop_padding=4, flip=True, cutout=0)
    flat = ds.train_images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(ds.mean, flat.mean(0))
    np.testing.assert_allclose(ds.std, flat.std(0))
    # normalize: zero mean, unit std per channel over the train set.
    z = np.asarray(data.normalize(ds.train_images, ds.mean, ds.std))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1.0, atol=1e-4)


def _write_fake_archive(root, name, n_train_per_file, n_test):
    """Pickles like the Toronto python archives: b'data' [N, 3072] CHW-flattened."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": n_train_per_file for i in range(1, 6)}
        files["test_batch"] = n_test
        label_key, classes = b"labels", 10
    else:
        folder = root / "cifar-100-python"
        files = {"train": n_train_per_file, "test": n_test}
        label_key, classes = b"fine_labels", 100
    folder.mkdir()
    written = {}
    for fname, n in files.items():
        chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        chw[0] = 0
        chw[0, 2, 5, 7] = 200  # blue channel, row 5, column 7 of the first image
        labels = rng.integers(0, classes, n).tolist()
        batch = {b"data": chw.reshape(n, 3072), label_key: labels}
        if name == "cifar100":
            batch[b"coarse_labels"] = [label // 5 for label in labels]
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)
        written[fname] = (chw, labels)
    return folder, written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_archive_chw_to_hwc(name, tmp_path):
    folder, written = _write_fake_archive(tmp_path, name, n_train_per_file=3, n_test=4)
    train_files = [f for f in written if "test" not in f]
    test_file = [f for f in written if "test" in f][0]
    for data_dir in (tmp_path, folder):  # parent folder or the archive folder itself
        ds = data.load_dataset(name, data_dir=str(data_dir))
        assert ds.train_images.shape == (3 * len(train_files), 32, 32, 3)
        assert ds.test_images.shape == (4, 32, 32, 3)
        assert ds.train_images.dtype == np.uint8
        # The hand-placed pixel lands at [row 5, col 7, channel 2].
        first = ds.train_images[0]
        assert first[5, 7, 2] == 200 and first.sum() == 200
        expected_train = np.concatenate([written[f][0] for f in train_files])
        np.testing.assert_array_equal(ds.train_images, expected_train.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(ds.test_images, written[test_file][0].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(ds.test_labels, written[test_file][1])


def test_missing_cifar_raises_with_instructions_and_never_downloads(tmp_path, monkeypatch):
    """Missing data is one error saying what to do, found by looking only: tfds is asked with
    ``download=False`` and nothing reaches for the network (a download would hang an offline run)."""
    import socket

    import tensorflow_datasets as tfds

    asked = []
    real_data_source = tfds.data_source

    def data_source(*args, **kwargs):
        asked.append(kwargs.get("download", True))  # tfds downloads unless told not to
        return real_data_source(*args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("load_dataset reached for the network")

    monkeypatch.setattr(tfds, "data_source", data_source)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(data.DataNotFoundError, match="--data-dir") as err:
        data.load_dataset("cifar100", data_dir=str(tmp_path / "empty"))
    assert asked == [False]
    assert "array_record" in str(err.value)
    assert "cifar.html" in str(err.value)


# -------------------------------------------------------------- augmentation


def _images(b=6, h=8, w=10, c=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(1, 255, (b, h, w, c)), jnp.float32)


CFG = AugmentConfig(crop_padding=2, flip=True, cutout=4)


def test_augment_is_deterministic_given_key():
    x = _images()
    aug = jax.jit(lambda k, x: data.augment_batch(k, x, CFG))
    a = aug(jax.random.key(1), x)
    np.testing.assert_array_equal(a, aug(jax.random.key(1), x))
    assert a.shape == x.shape
    assert not np.array_equal(a, aug(jax.random.key(2), x))


def test_identity_config_is_identity():
    x = _images()
    np.testing.assert_array_equal(data.augment_batch(jax.random.key(0), x, AugmentConfig()), x)


def test_crop_flip_cutout_match_numpy_reference():
    x = _images()
    key = jax.random.key(3)
    b, h, w, _ = x.shape
    params = data.sample_augment_params(key, b, h, w, CFG)
    out = np.asarray(data.augment_batch(key, x, CFG))
    np.testing.assert_array_equal(out, np.asarray(data.apply_augment(x, params, CFG)))
    offsets, flips, centers = map(np.asarray, params)
    assert offsets.min() >= 0 and offsets.max() <= 2 * CFG.crop_padding
    p, half = CFG.crop_padding, CFG.cutout // 2
    xn = np.asarray(x)
    for i in range(b):
        padded = np.pad(xn[i], ((p, p), (p, p), (0, 0)))
        ref = padded[offsets[i, 0] : offsets[i, 0] + h, offsets[i, 1] : offsets[i, 1] + w]
        if flips[i]:
            ref = ref[:, ::-1]
        ref = ref.copy()
        cy, cx = centers[i]
        ref[max(cy - half, 0) : max(cy + half, 0), max(cx - half, 0) : max(cx + half, 0)] = 0
        np.testing.assert_array_equal(out[i], ref)


def test_flip_alone_is_exact_mirror():
    x = _images(b=16)
    cfg = AugmentConfig(flip=True)
    out = np.asarray(data.augment_batch(jax.random.key(0), x, cfg))
    flips = np.asarray(data.sample_augment_params(jax.random.key(0), 16, 8, 10, cfg).flip)
    assert flips.any() and not flips.all()  # both cases exercised
    for i in range(16):
        np.testing.assert_array_equal(out[i], np.asarray(x[i])[:, ::-1] if flips[i] else x[i])


def test_crop_padding_becomes_minus_mean_over_std_after_normalize():
    # torchvision order: pad raw with 0, crop, then normalise.
    x = jnp.full((1, 4, 4, 1), 100.0)
    params = data.AugmentParams(jnp.array([[0, 0]]), jnp.array([False]), jnp.array([[0, 0]]))
    out = data.apply_augment(x, params, AugmentConfig(crop_padding=2))
    z = np.asarray(data.normalize(out, (50.0,), (10.0,)))
    assert z[0, 0, 0, 0] == -5.0 and z[0, 3, 3, 0] == 5.0


# ------------------------------------------------------------------- batches


def test_num_batches():
    assert data.num_batches(10, 3, drop_last=True) == 3
    assert data.num_batches(10, 3, drop_last=False) == 4
    assert data.num_batches(9, 3, drop_last=False) == 3


def test_epoch_permutation_deterministic_and_varies():
    p = data.epoch_permutation(100, seed=7, epoch=3)
    np.testing.assert_array_equal(p, data.epoch_permutation(100, seed=7, epoch=3))
    assert sorted(p) == list(range(100))
    assert not np.array_equal(p, data.epoch_permutation(100, seed=7, epoch=4))
    assert not np.array_equal(p, data.epoch_permutation(100, seed=8, epoch=3))


def test_train_batches_resume_equals_tail():
    x = np.arange(50, dtype=np.uint8)[:, None]
    y = np.arange(50, dtype=np.int32)
    full = list(data.train_batches(x, y, 8, seed=0, epoch=2))
    assert len(full) == 6  # 50 // 8, last partial batch dropped
    assert all(bx.dtype == np.uint8 and len(bx) == 8 for bx, _ in full)
    for bx, by in full:
        np.testing.assert_array_equal(bx[:, 0], by)  # images and labels stay paired
    resumed = list(data.train_batches(x, y, 8, seed=0, epoch=2, start_batch=4))
    assert len(resumed) == 2
    for (ax, ay), (bx, by) in zip(resumed, full[4:]):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ay, by)


def test_eval_batches_cover_everything_once():
    x = np.arange(23, dtype=np.uint8)[:, None, None, None] + 1
    y = np.arange(23, dtype=np.int32)
    batches = list(data.eval_batches(x, y, 10))
    assert [n for _, _, n in batches] == [10, 10, 3]
    assert all(bx.shape == (10, 1, 1, 1) and by.shape == (10,) for bx, by, _ in batches)
    seen = np.concatenate([by[:n] for _, by, n in batches])
    np.testing.assert_array_equal(seen, y)
    last_x = batches[-1][0]
    assert (last_x[3:] == 0).all() and (last_x[:3, 0, 0, 0] == [21, 22, 23]).all()


def test_shard_for_process_single_process_is_identity():
    x, y = np.arange(8), np.arange(8) * 2
    sx, sy = data.shard_for_process(x, y)
    assert sx is x and sy is y


def test_shard_for_process_takes_contiguous_slice(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    x, mask = np.arange(8), np.arange(8) < 5
    sx, smask = data.shard_for_process(x, mask)
    np.testing.assert_array_equal(sx, [4, 5])
    np.testing.assert_array_equal(smask, [True, False])
    with pytest.raises(ValueError):
        data.shard_for_process(np.arange(6))
