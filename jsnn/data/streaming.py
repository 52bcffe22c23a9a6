"""Any tfds image-classification dataset, streamed from its files: ``--dataset tfds:NAME[/CONFIG]``.

The dataset must be prepared under the data dir in tfds's array_record format; it is read through
``tfds.data_source`` (random access into the ArrayRecord files) and never held whole in memory:
each batch's records are read, decoded, resized or cropped and put together when the batch is
needed, by grain (``grain.MapDataset``: threads, and worker processes with ``workers`` > 0), the
data loader built for JAX on random-access sources. grain rather than a prefetcher of jsnn's own:
it reads records in parallel threads or processes while keeping their order, with a bounded buffer,
and it is what tfds's ``data_source`` is made for.

Which records a batch holds is a pure function of ``(seed, epoch, batch)``, as for the in-memory
datasets (``batches.epoch_permutation``: the same order, so a dataset streamed or loaded gives the
same batches), and so is every random draw of the host-side augmentation (keyed on seed, epoch and
the record). Resuming at ``(epoch, batch)`` -- the position every checkpoint already stores
(``jsnn.runs.segment.Position``) -- therefore reads exactly the batches an uninterrupted run would,
without replaying the ones before: the sampler's position *is* the checkpoint's position, and no
iterator state needs saving.

Process p of P reads only its rows of each global batch (rows ``[p B/P, (p+1) B/P)``, the rows
``batches.shard_for_process`` would keep): the processes' reads are disjoint and together cover the
batch. Evaluation streams the same way, the last batch padded.

Images of one fixed size (SVHN, CIFAR-10-C: ``features['image'].shape`` fully known) stay at that
size; the device then crops (padding size // 8) and flips as for CIFAR. Images of any size (ImageNet)
are brought to ``image_size`` (224): training takes an Inception-style random resized crop (8-100 %
of the area, aspect ratio 3/4-4/3; the torchvision and big_vision recipe) and the device flips it;
evaluation resizes the shorter side to ``image_size / 0.875`` (256) and takes the centre crop.
Normalisation statistics are estimated once from 512 evenly spaced training images.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Any, Iterator

import jax
import numpy as np

from jsnn.data.augment import AugmentConfig
from jsnn.data.batches import epoch_permutation, num_batches
from jsnn.data.errors import DataNotFoundError

TFDS_PREFIX = "tfds:"
IMAGE_SIZE = 224  # what images of varying size become (ImageNet's convention)
EVAL_CROP_FRACTION = 0.875  # resize the shorter side to size / 0.875 (256 for 224), then centre-crop size
CROP_AREA = (0.08, 1.0)  # the random resized crop's fraction of the image area (Inception / torchvision)
CROP_RATIO = (3 / 4, 4 / 3)  # and its aspect ratio range
STATS_IMAGES = 512  # training images the channel mean and std are estimated from
# tfds image datasets of handwritten or printed characters: mirroring changes the class
NO_FLIP = ("mnist", "fashion_mnist", "kmnist", "emnist", "binarized_mnist", "svhn_cropped", "omniglot")


def is_tfds_name(name: str) -> bool:
    """``tfds:NAME`` or ``tfds:NAME/CONFIG``."""
    return isinstance(name, str) and name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Encoded image bytes -> uint8 [H, W, C]: decoding, resizing and cropping on the host.

    ``size`` None: the images have one fixed size and are only decoded.
    """

    channels: int
    size: int | None = None

    def decode(self, data):
        from PIL import Image

        if isinstance(data, np.ndarray):  # a source that decoded already
            return Image.fromarray(data.squeeze(-1) if data.shape[-1] == 1 else data)
        image = Image.open(io.BytesIO(data))
        mode = "L" if self.channels == 1 else "RGB"
        return image if image.mode == mode else image.convert(mode)

    def _array(self, image) -> np.ndarray:
        a = np.asarray(image, dtype=np.uint8)
        return a[..., None] if a.ndim == 2 else a

    def train(self, data, rng: np.random.Generator) -> np.ndarray:
        """A random resized crop to ``size`` x ``size`` (the decoded image itself at a fixed size)."""
        image = self.decode(data)
        if self.size is None:
            return self._array(image)
        from PIL import Image

        box = random_resized_crop_box(image.size[0], image.size[1], rng)
        return self._array(image.resize((self.size, self.size), Image.BILINEAR, box=box))

    def eval(self, data) -> np.ndarray:
        """Shorter side to ``size / 0.875``, then the centre ``size`` x ``size`` (fixed size: decoded only)."""
        image = self.decode(data)
        if self.size is None:
            return self._array(image)
        from PIL import Image

        width, height = image.size
        scale = self.size / EVAL_CROP_FRACTION / min(width, height)
        # the centre size x size of the image resized by `scale`, read straight from the original
        side = self.size / scale
        left, top = (width - side) / 2, (height - side) / 2
        return self._array(image.resize((self.size, self.size), Image.BILINEAR,
                                        box=(left, top, left + side, top + side)))


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[float, ...]:
    """(left, top, right, bottom) of an Inception-style crop: torchvision's RandomResizedCrop.get_params
    (10 tries at a random area and log-uniform aspect ratio, then the centre crop at the clamped ratio)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_AREA)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return (left, top, left + w, top + h)
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


# -------------------------------------------------------------------- positions


def train_records(n: int, batch_size: int, seed: int, epoch: int, process_index: int, process_count: int,
                  batch: int) -> np.ndarray:
    """The record indices process ``process_index`` reads for train batch ``batch``: its rows of the
    global batch ``epoch_permutation(n, seed, epoch)[batch * B : (batch + 1) * B]``."""
    local = _local_batch(batch_size, process_count)
    start = batch * batch_size + process_index * local
    return epoch_permutation(n, seed, epoch)[start:start + local]


def _local_batch(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"global batch of {batch_size} does not split over {process_count} processes")
    return batch_size // process_count


class _TrainRecord:
    """Local position k of an epoch -> (image, label) of the record at that position (grain's map)."""

    def __init__(self, source, transform: ImageTransform, keys: tuple[str, str], order: np.ndarray,
                 batch_size: int, process_index: int, process_count: int, seed: int, epoch: int):
        self.source, self.transform, self.keys, self.order = source, transform, keys, order
        self.batch_size, self.local = batch_size, _local_batch(batch_size, process_count)
        self.offset, self.seed, self.epoch = process_index * self.local, seed, epoch

    def __call__(self, position: int):
        b, row = divmod(int(position), self.local)
        record = int(self.order[b * self.batch_size + self.offset + row])
        example = self.source[record]
        # the draws of this record in this epoch: the same whichever process, thread or resume reads it
        rng = np.random.default_rng([self.seed, self.epoch, record])
        return self.transform.train(example[self.keys[0]], rng), np.int32(example[self.keys[1]])


class _EvalRecord:
    """Local position k -> (image, label, valid) of the evaluation split; padding past the end."""

    def __init__(self, source, transform: ImageTransform, keys: tuple[str, str], n: int, shape: tuple[int, ...],
                 batch_size: int, process_index: int, process_count: int):
        self.source, self.transform, self.keys, self.n, self.shape = source, transform, keys, n, shape
        self.batch_size, self.local = batch_size, _local_batch(batch_size, process_count)
        self.offset = process_index * self.local

    def __call__(self, position: int):
        b, row = divmod(int(position), self.local)
        record = b * self.batch_size + self.offset + row
        if record >= self.n:
            return np.zeros(self.shape, np.uint8), np.int32(0), np.float32(0.0)
        example = self.source[record]
        return self.transform.eval(example[self.keys[0]]), np.int32(example[self.keys[1]]), np.float32(1.0)


# ------------------------------------------------------------------ lazy views


class RecordImages:
    """A split's images as a read-only array-like ``[N, H, W, C]`` uint8, decoded (evaluation
    transform) only for the rows asked for: ``x[i]``, ``x[a:b]``, ``x[index_array]``. Lets the code
    that slices ``dataset.test_images`` (the cost report, NIR checks) run on a streamed dataset."""

    def __init__(self, source, transform: ImageTransform, key: str, shape: tuple[int, ...]):
        self.source, self.transform, self.key = source, transform, key
        self.shape = (len(source),) + tuple(shape)
        self.dtype, self.ndim = np.dtype(np.uint8), 1 + len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.transform.eval(self.source[int(index)][self.key])
        rows = _rows(index, len(self))
        out = np.empty((len(rows),) + self.shape[1:], np.uint8)
        for i, r in enumerate(rows):
            out[i] = self.transform.eval(self.source[int(r)][self.key])
        return out


class RecordLabels:
    """A split's labels as a read-only array-like ``[N]`` int32, read record by record when asked."""

    def __init__(self, source, key: str):
        self.source, self.key = source, key
        self.shape, self.dtype, self.ndim = (len(source),), np.dtype(np.int32), 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.int32(self.source[int(index)][self.key])
        return np.array([self.source[int(r)][self.key] for r in _rows(index, len(self))], np.int32)


def _rows(index, n: int):
    """The rows a slice or an index array names (a slice without materialising all n row numbers)."""
    if isinstance(index, slice):
        return range(*index.indices(n))
    rows = np.asarray(index)
    return np.where(rows < 0, rows + n, rows)


# -------------------------------------------------------------------- dataset


@dataclasses.dataclass(frozen=True)
class StreamedDataset:
    """A tfds dataset read batch by batch from its ArrayRecord files.

    Has ``ArrayDataset``'s attributes (``train_images`` etc. as lazy views, ``RecordImages``), and
    ``process_train_batches`` / ``process_eval_batches``, which the trainer iterates
    (``jsnn.data.feed``).
    """

    name: str
    train_images: RecordImages
    train_labels: RecordLabels
    test_images: RecordImages
    test_labels: RecordLabels
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentConfig
    transform: ImageTransform
    keys: tuple[str, str]
    workers: int = 0  # grain worker processes (0: threads in this process)
    threads: int = 0  # reading threads per process or worker (0: 2 per CPU core)
    timesteps: int | None = None  # static images

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[-3:])

    def _threads(self) -> int:
        return self.threads or 2 * (os.cpu_count() or 1)

    def _iterate(self, records, local: int) -> Iterator[Any]:
        import grain.python as grain

        # Batched after the threads: the read-ahead is a few batches of records, not of whole batches.
        ds = records.to_iter_dataset(grain.ReadOptions(num_threads=self._threads(), prefetch_buffer_size=2 * local))
        ds = ds.batch(local, drop_remainder=True)
        if self.workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; jsnn's programs parse none
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2))
        return iter(ds)

    def process_train_batches(self, batch_size: int, seed: int, epoch: int, start_batch: int = 0, *,
                              process_index: int | None = None, process_count: int | None = None
                              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This process's rows of train batches ``start_batch ..`` of ``epoch`` (the last partial one dropped)."""
        import grain.python as grain

        index, count = _process(process_index, process_count)
        local = _local_batch(batch_size, count)
        n = len(self.train_labels)
        steps = num_batches(n, batch_size, drop_last=True)
        order = epoch_permutation(n, seed, epoch)
        read = _TrainRecord(self.train_images.source, self.transform, self.keys, order, batch_size, index, count,
                            seed, epoch)
        records = grain.MapDataset.range(start_batch * local, steps * local).map(read)
        return self._iterate(records, local)

    def process_eval_batches(self, batch_size: int, *, process_index: int | None = None,
                             process_count: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """This process's rows ``(images, labels, valid)`` of each test batch, in order, the last padded."""
        import grain.python as grain

        index, count = _process(process_index, process_count)
        local = _local_batch(batch_size, count)
        n = len(self.test_labels)
        read = _EvalRecord(self.test_images.source, self.transform, self.keys, n, self.image_shape, batch_size,
                           index, count)
        records = grain.MapDataset.range(0, num_batches(n, batch_size, drop_last=False) * local).map(read)
        return self._iterate(records, local)


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    if index is None or count is None:
        return jax.process_index(), jax.process_count()
    return index, count


# -------------------------------------------------------------------- loading


def not_prepared_message(name: str, data_dir: str, reason: str) -> str:
    """One line: what is missing and how to prepare it."""
    base = name.split("/")[0]
    manual = (f" (ImageNet: the ILSVRC2012 train and validation tars in {os.path.join(data_dir, 'downloads', 'manual')}"
              " first)") if base.startswith("imagenet") else ""
    return (f"tfds dataset {name!r} is not prepared in {data_dir} in array_record format ({reason}); prepare it once "
            f"with `tfds build {name} --data_dir={data_dir} --file_format=array_record`{manual}, then pass "
            f"--data-dir {data_dir} (or set TFDS_DATA_DIR)")


def load_streamed(name: str, data_dir: str, *, image_size: int = IMAGE_SIZE, workers: int = 0,
                  threads: int = 0) -> StreamedDataset:
    """``tfds:NAME[/CONFIG]`` prepared in ``data_dir`` (array_record), opened for streaming.

    Training reads the "train" split, evaluation "test" (else "validation", ImageNet's).

    Raises:
      DataNotFoundError: not prepared there (one line: what to run).
      ValueError: not an image classification dataset, or no train split.
    """
    tfds_name = name[len(TFDS_PREFIX):] if is_tfds_name(name) else name
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataNotFoundError(not_prepared_message(tfds_name, data_dir, "tensorflow-datasets is not installed")
                                ) from err
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        info = builder.info
        splits = dict(info.splits)
    except Exception as err:  # tfds signals "not found / not prepared" with assorted types
        raise DataNotFoundError(not_prepared_message(tfds_name, data_dir, _first_line(err))) from None
    if not splits:
        raise DataNotFoundError(not_prepared_message(tfds_name, data_dir, "no prepared splits"))
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if image_key not in features or type(features[image_key]).__name__ != "Image" or label_key not in features \
            or not hasattr(features[label_key], "num_classes"):
        raise ValueError(f"tfds dataset {tfds_name!r} is not an image classification dataset (jsnn needs an image "
                         f"feature and a class label; it has {', '.join(features.keys())})")
    if "train" not in splits:
        raise ValueError(f"tfds dataset {tfds_name!r} has no train split (it has {', '.join(splits)})")
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if test_split is None:
        raise ValueError(f"tfds dataset {tfds_name!r} has no test or validation split (it has {', '.join(splits)})")
    try:
        train_src, test_src = tfds.data_source(tfds_name, split=["train", test_split], data_dir=data_dir,
                                               download=False, decoders={image_key: tfds.decode.SkipDecoding()})
    except Exception as err:
        raise DataNotFoundError(not_prepared_message(tfds_name, data_dir, _first_line(err))) from None
    height, width, channels = features[image_key].shape
    fixed = height is not None and width is not None
    transform = ImageTransform(channels=channels or 3, size=None if fixed else image_size)
    shape = (height, width, transform.channels) if fixed else (image_size, image_size, transform.channels)
    flip = tfds_name.split("/")[0] not in NO_FLIP
    augment = AugmentConfig(crop_padding=height // 8, flip=flip) if fixed else AugmentConfig(flip=flip)
    train_images = RecordImages(train_src, transform, image_key, shape)
    mean, std = _channel_stats(train_images)
    return StreamedDataset(
        name=name if is_tfds_name(name) else TFDS_PREFIX + name, train_images=train_images,
        train_labels=RecordLabels(train_src, label_key),
        test_images=RecordImages(test_src, transform, image_key, shape), test_labels=RecordLabels(test_src, label_key),
        num_classes=int(features[label_key].num_classes),
        mean=mean, std=std, augment=augment, transform=transform, keys=(image_key, label_key),
        workers=workers, threads=threads)


def _channel_stats(images: RecordImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of up to STATS_IMAGES evenly spaced images (raw units, float64)."""
    n = len(images)
    rows = np.unique(np.linspace(0, n - 1, min(n, STATS_IMAGES)).astype(np.int64))
    total, squares = np.zeros(images.shape[-1]), np.zeros(images.shape[-1])
    for r in rows:  # image by image: 512 ImageNet-sized images at once would be 600 MB of float64
        pixels = images[int(r)].reshape(-1, images.shape[-1]).astype(np.float64)
        total += pixels.sum(0)
        squares += np.square(pixels).sum(0)
    count = len(rows) * int(np.prod(images.shape[1:-1]))
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
