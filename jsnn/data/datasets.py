"""Whole datasets loaded into host memory as uint8 NHWC arrays.

CIFAR fits in RAM (50k x 32 x 32 x 3 bytes = 150 MB), so the whole train and
test sets are read once into NumPy and batches are sliced from them
(``batches.py``); no tf.data and no TensorFlow anywhere.

Sources, tried in order, for CIFAR:
  1. the original "python version" archives as torchvision unpacks them
     (``cifar-10-batches-py/``, ``cifar-100-python/``);
  2. tensorflow-datasets' ``tfds.data_source`` (array_record format), read
     record by record with ``download=False`` -- never a download.
If neither is there, ``DataNotFoundError`` says how to prepare the data.

MNIST and Fashion-MNIST (60k / 10k, 28 x 28 x 1): the four IDX files as published, gzipped or not,
in the folders ``jsnn.data.mnist`` looks in, else a prepared tfds data source (as CIFAR's).

The event datasets (``EVENT_DATASETS``: the offline stand-in ``digits_dvs``, N-MNIST, DVS Gesture,
CIFAR10-DVS) are frames ``[N, T, H, W, 2]`` from the frame cache (``jsnn.data.events``), memory
mapped rather than loaded, so N-MNIST's 1.4 GB of train frames need not fit in RAM.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np

from jsnn.data.augment import AugmentConfig
from jsnn.data.digits import digits_arrays, digits_split_indices
from jsnn.data.errors import DataNotFoundError
from jsnn.data.events.frames import FrameSettings
from jsnn.data.events.loader import EVENT_DATASETS, default_frame_settings, load_event_frames
from jsnn.data.mnist import IDX_DATASETS, find_idx_files, load_idx_splits, not_found_message
from jsnn.data.streaming import TFDS_PREFIX, StreamedDataset, is_tfds_name, load_streamed

# Kim et al. (ECCV 2022) / the paper: RandomCrop(32, padding=4) + horizontal
# flip. Kim et al. also apply Cutout(16); off here by default, an option.
CIFAR_AUGMENT = AugmentConfig(crop_padding=4, flip=True, cutout=0)
# Digits are 8x8 and not mirror-symmetric: no crop, no flip.
DIGITS_AUGMENT = AugmentConfig()
# MNIST / Fashion-MNIST: none, as the SNN papers that report them train (STBP, PLIF, Spiking ResNets)
MNIST_AUGMENT = AugmentConfig()

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100") + EVENT_DATASETS


class DatasetNames(list):
    """The names ``--dataset`` takes: ``DATASET_NAMES`` and any ``tfds:NAME[/CONFIG]`` (streamed,
    ``jsnn.data.streaming``), which ``in`` accepts and the list shows as one entry."""

    def __init__(self):
        super().__init__(DATASET_NAMES + (TFDS_PREFIX + "NAME[/CONFIG]",))

    def __contains__(self, name) -> bool:
        return is_tfds_name(name) or name in DATASET_NAMES


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A whole dataset on the host.

    Images are raw uint8 pixels ``[N, H, W, C]`` (NHWC); ``mean``/``std`` are the
    per-channel statistics of the *train* images in the same raw units, ready
    for ``augment.normalize``. An event dataset (``timesteps`` set) holds uint8
    event counts ``[N, T, H, W, 2]`` instead (channel 0 = OFF, 1 = ON), possibly
    read-only memmaps of the frame cache.
    """

    name: str
    train_images: np.ndarray  # uint8 [N, H, W, C], or [N, T, H, W, 2] for event data
    train_labels: np.ndarray  # int32 [N]
    test_images: np.ndarray  # uint8 [M, H, W, C], or [M, T, H, W, 2]
    test_labels: np.ndarray  # int32 [M]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentConfig
    timesteps: int | None = None  # T of event frames; None = static images

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One sample's array: (H, W, C) for images, (T, H, W, C) for event frames."""
        return tuple(self.train_images.shape[1:])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image or one frame."""
        return tuple(self.train_images.shape[-3:])


def default_data_dir() -> str:
    """Where tensorflow-datasets looks by default: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def load_dataset(name: str, data_dir: str | None = None, *,
                 frames: FrameSettings | None = None) -> ArrayDataset | StreamedDataset:
    """Loads ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` or an event dataset
    (``EVENT_DATASETS``), or opens ``tfds:NAME[/CONFIG]`` for streaming from its array_record files
    (``StreamedDataset``).

    Args:
      name: dataset name.
      data_dir: folder with the prepared data (MNIST, CIFAR and the recorded event
        datasets; digits ships with scikit-learn, digits_dvs is simulated from it).
        Defaults to ``default_data_dir()``.
      frames: how an event dataset's events become frames; None = its defaults
        (``default_frame_settings(name)``). Ignored by the image datasets.

    Raises:
      ValueError: unknown name.
      DataNotFoundError: the files are not under ``data_dir`` (or are damaged).
    """
    if name == "digits":
        return load_digits()
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir)
    if name in IDX_DATASETS:
        return load_mnist(name, data_dir)
    if name in EVENT_DATASETS:
        return load_event_dataset(name, data_dir, frames)
    if is_tfds_name(name):
        return load_streamed(name, os.path.expanduser(data_dir) if data_dir else default_data_dir())
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DatasetNames())}")


def _make_dataset(name, train_x, train_y, test_x, test_y, num_classes, augment):
    train_x = np.ascontiguousarray(train_x, dtype=np.uint8)
    test_x = np.ascontiguousarray(test_x, dtype=np.uint8)
    # float64 accumulation: summing 50k*32*32 values in float32 loses digits.
    mean, std = channel_stats(train_x)
    return ArrayDataset(
        name=name,
        train_images=train_x,
        train_labels=np.asarray(train_y, dtype=np.int32),
        test_images=test_x,
        test_labels=np.asarray(test_y, dtype=np.int32),
        num_classes=num_classes,
        mean=mean,
        std=std,
        augment=augment,
    )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 NHWC images, raw units."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return tuple(float(m) for m in flat.mean(0)), tuple(float(s) for s in flat.std(0))


def load_event_dataset(name: str, data_dir: str | None = None, frames: FrameSettings | None = None) -> ArrayDataset:
    """An event dataset's frames from the frame cache (built on first use)."""
    if name != "digits_dvs":
        data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    settings = frames if frames is not None else default_frame_settings(name)
    f = load_event_frames(name, data_dir, settings)
    # Counts are not normalised: a frame's value is a number of events (0, 1, 2, ...), which the
    # first layer sees as input current at its step, as in SpikingJelly and spyx; standardising
    # would turn the many zero pixels into negative currents and make the input depend on the split.
    return ArrayDataset(name=name, train_images=f.train_frames, train_labels=f.train_labels,
                        test_images=f.test_frames, test_labels=f.test_labels, num_classes=f.num_classes,
                        mean=(0.0, 0.0), std=(1.0, 1.0), augment=f.augment, timesteps=settings.timesteps)


# --------------------------------------------------------------------- digits


def load_digits() -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits: 1797 images, pixel values 0..16.

    Fixed split: ``train_test_split(test_size=0.2, stratify=labels,
    random_state=0)``, giving 1437 train and 360 test images with the class
    proportions of the whole set in both (``digits_split_indices``). Stored as uint8 ``[N, 8, 8, 1]`` in
    the original 0..16 range (mean/std are in those units too).
    """
    images, labels = digits_arrays()
    images = images.astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
    train, test = digits_split_indices()
    return _make_dataset("digits", images[train], labels[train], images[test], labels[test], 10, DIGITS_AUGMENT)


# ------------------------------------------------------------- MNIST, Fashion


def load_mnist(name: str, data_dir: str | None = None) -> ArrayDataset:
    """MNIST / Fashion-MNIST: the IDX files (``jsnn.data.mnist``), else a prepared tfds data source."""
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    paths, folder = find_idx_files(name, data_dir)
    if paths:
        splits = load_idx_splits(name, paths)
    else:
        splits = _read_tfds(name, data_dir, (28, 28, 1), lambda cause: not_found_message(name, data_dir, folder)
                            + (f" (tensorflow-datasets reported: {type(cause).__name__}: {cause})"
                               if os.path.isdir(os.path.join(data_dir, name)) else ""))
    return _make_dataset(name, *splits, 10, MNIST_AUGMENT)


# ---------------------------------------------------------------------- CIFAR

# Per dataset: (folder of the python archive, train files, test files,
# label key in the pickled dicts, number of classes, display name).
_CIFAR_PY = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        10,
        "CIFAR-10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",  # the 100 fine classes, as the paper uses
        100,
        "CIFAR-100",
    ),
}


def load_cifar(name: str, data_dir: str | None = None) -> ArrayDataset:
    """CIFAR-10/100 from the python archives or a prepared tfds data source."""
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    num_classes = _CIFAR_PY[name][4]
    folder = _find_python_archive(name, data_dir)
    if folder is not None:
        splits = _read_python_archive(name, folder)
    else:
        splits = _read_tfds(name, data_dir, (32, 32, 3), lambda cause: _not_found_message(name, data_dir, cause))
    return _make_dataset(name, *splits, num_classes, CIFAR_AUGMENT)


def _find_python_archive(name: str, data_dir: str) -> str | None:
    """The folder holding the pickled batches, if any.

    Accepts ``data_dir`` itself, ``data_dir/<archive folder>`` (torchvision's
    layout) and ``data_dir/<name>/<archive folder>`` (Kim et al.'s layout).
    """
    folder_name, train_files, test_files = _CIFAR_PY[name][:3]
    candidates = [
        data_dir,
        os.path.join(data_dir, folder_name),
        os.path.join(data_dir, name, folder_name),
    ]
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, f)) for f in train_files + test_files):
            return folder
    return None


def _read_python_archive(name: str, folder: str):
    _, train_files, test_files, label_key = _CIFAR_PY[name][:4]

    def read(files):
        images, labels = [], []
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            # Rows are channel-major (1024 R, then G, then B values): CHW -> HWC.
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[label_key], dtype=np.int32))
        return np.concatenate(images), np.concatenate(labels)

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    return train_x, train_y, test_x, test_y


def _not_found_message(name: str, data_dir: str, cause: BaseException | None) -> str:
    display = _CIFAR_PY[name][5]
    folder = _CIFAR_PY[name][0]
    msg = (
        f"{display} not found in {data_dir} (looked for the python archive "
        f"'{folder}/' and for a tfds '{name}' data source in array_record format; "
        "nothing is downloaded). Prepare it once, on a machine with internet, in either way:\n"
        f"  (a) download the python version from https://www.cs.toronto.edu/~kriz/cifar.html "
        f"and unpack it into {data_dir} (giving {os.path.join(data_dir, folder)}/), or\n"
        f"  (b) with tensorflow-datasets, which needs TensorFlow installed to *generate* "
        f"CIFAR (pip install tensorflow; reading it back here does not): "
        f"`tfds build {name} --data_dir={data_dir} --file_format=array_record` "
        f"(or in Python: tfds.data_source('{name}', data_dir='{data_dir}', "
        "builder_kwargs={'file_format': 'array_record'}, download=True)). "
        "The file format must be array_record, which tfds.data_source reads without "
        "TensorFlow; with an explicit data_dir tfds otherwise writes tfrecord, "
        "which cannot be read that way.\n"
        f"Then pass --data-dir {data_dir} (or set TFDS_DATA_DIR)."
    )
    if not os.path.isdir(os.path.join(data_dir, name)):
        msg += f"\n(There is no tfds folder {os.path.join(data_dir, name)}.)"
    elif cause is not None:
        # The folder exists, so tfds's own reason (e.g. prepared as tfrecord) helps.
        msg += f"\n(tensorflow-datasets reported: {type(cause).__name__}: {cause})"
    return msg


def _read_tfds(name: str, data_dir: str, shape: tuple[int, int, int], message):
    """Train and test splits of the tfds data source ``name`` prepared under ``data_dir`` (images of
    ``shape``); ``message(cause)`` is the DataNotFoundError's text when there is none."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataNotFoundError(message(err)) from err
    try:
        # download=False: only read what is there; tfds raises (quickly) if the
        # data is missing or not in a random-access format.
        train_src, test_src = tfds.data_source(name, split=["train", "test"], data_dir=data_dir, download=False)
    except Exception as err:  # tfds signals "not prepared" with assorted types
        raise DataNotFoundError(message(err)) from err
    train_x, train_y = _read_source(train_src, shape)
    test_x, test_y = _read_source(test_src, shape)
    return train_x, train_y, test_x, test_y


def _read_source(source, shape):
    """All records of a tfds data source as (uint8 [N, *shape], int32 [N])."""
    n = len(source)
    images = np.empty((n, *shape), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        record = source[i]
        images[i] = record["image"]
        labels[i] = record["label"]  # for cifar100 'label' is the fine label
    return images, labels
