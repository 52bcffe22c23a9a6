"""The event datasets as frames: default frame settings, augmentation presets, and loading through the cache.

``load_event_frames(name, data_dir, frames)`` returns each split's uint8 ``[N, T, H, W, 2]`` frames
(read-only memmaps of the frame cache, ``cache.py``) and int32 labels. ``jsnn.data.load_dataset``
wraps them in an ``ArrayDataset``. The files are found and decoded by ``layouts.py`` and
``readers.py``; ``digits_dvs`` is simulated (``digits_dvs.py``) and needs no files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import NamedTuple

import numpy as np

from jsnn.data.augment import AugmentConfig
from jsnn.data.errors import DataNotFoundError
from jsnn.data.events import cache, digits_dvs
from jsnn.data.events.frames import FrameSettings, frame_counts, frame_events, frame_shape, to_storage
from jsnn.data.events.layouts import Segment, iter_sample_events, list_samples
from jsnn.data.events.readers import EVENT_DATASETS as RECORDED_DATASETS
from jsnn.data.events.readers import NUM_CLASSES as RECORDED_NUM_CLASSES
from jsnn.data.events.readers import SENSOR_SIZES as RECORDED_SENSOR_SIZES

EVENT_DATASETS = ("digits_dvs",) + RECORDED_DATASETS
SENSOR_SIZES = {"digits_dvs": digits_dvs.SENSOR_SIZE, **RECORDED_SENSOR_SIZES}  # (W, H, P)
NUM_CLASSES = {"digits_dvs": 10, **RECORDED_NUM_CLASSES}

# Default frames per dataset (the event papers' common preprocessing: T frames of equal time windows):
DEFAULT_FRAMES = {
    # digits_dvs: T = 4 and 8x8 as the digits presets (jsnn/config.py, configs/digits.py), so digits_cnn
    # has digits' shape (two channels) and the digits optimisation presets apply: 34x34 summed into 8x8
    # (x * 8 // 34, tonic Downsample(spatial_factor=8/34): bins of 4 or 5 pixels). Measured on this
    # 2-core machine (dense preset, lr 0.1, 3 epochs): 91 % test accuracy at 8x8, about 700 img/s;
    # at 17x17 the same preset diverged (a linear classifier reaches 95 % / 94 % on the two).
    "digits_dvs": FrameSettings(timesteps=4, slicing="time", size=(8, 8)),
    # N-MNIST: 34x34, equal time bins as spyx's NMNIST_loader (tonic ToFrame(n_time_bins=40)); T = 10
    # rather than spyx's 40 keeps the train cache at 1.4 GB (the note's section 3.5).
    "nmnist": FrameSettings(timesteps=10, slicing="time"),
    # DVS Gesture: 64x64, T = 16, equal event counts (SpikingJelly split_by="number"), as Shi et al.,
    # CVPR 2024 (SpikingResformer, configs/direct_training/dvs128gesture.yaml); they resize with
    # antialiasing, here events are summed 2x2 (DECOLLE's sum downsampling, Kaiser et al. 2020, at 32x32).
    "dvs_gesture": FrameSettings(timesteps=16, slicing="count", size=(64, 64)),
    # CIFAR10-DVS: 48x48, T = 10, equal event counts: SpikingJelly's memopt example (config.yaml,
    # data_module.py) and Shi et al., ICLR 2024 (xyshi2000/Unstructured-Pruning); 128 -> 48 pools
    # 3, 3, 2 pixels unevenly, as tonic Downsample(spatial_factor=0.375) does.
    "cifar10_dvs": FrameSettings(timesteps=10, slicing="count", size=(48, 48)),
}

# On-device augmentation per dataset:
EVENT_AUGMENT = {
    # digits: mirroring or moving a digit changes or cuts it (jsnn's digits preset: none)
    "digits_dvs": AugmentConfig(),
    "nmnist": AugmentConfig(),
    # DVS Gesture: no flip, the classes come in mirrored pairs (right / left hand wave, right / left arm
    # clockwise, ...: IBM's gesture_mapping.csv); SpikingJelly's classify_dvsg.py trains without augmentation.
    "dvs_gesture": AugmentConfig(),
    # CIFAR10-DVS: horizontal flip and a shift of up to 5 pixels each way, as TET (Deng et al., ICLR 2022)
    # and the code built on it (flip p = 0.5, torch.roll by randint(-5, 5) at 48x48); here the shift is a
    # zero-padded crop (padding 5), so what leaves one side does not come back on the other.
    "cifar10_dvs": AugmentConfig(crop_padding=5, flip=True),
}


class EventFrames(NamedTuple):
    """One event dataset as frames: uint8 ``[N, T, H, W, 2]`` (memmaps) and int32 labels per split."""

    train_frames: np.ndarray
    train_labels: np.ndarray
    test_frames: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    augment: AugmentConfig
    cache_path: str


def default_frame_settings(name: str, timesteps: int | None = None) -> FrameSettings:
    """The default ``FrameSettings`` of event dataset ``name`` (``DEFAULT_FRAMES``), with T = ``timesteps`` if given."""
    if name not in DEFAULT_FRAMES:
        raise ValueError(f"unknown event dataset {name!r}; valid names: {', '.join(EVENT_DATASETS)}")
    settings = DEFAULT_FRAMES[name]
    return settings if timesteps is None else dataclasses.replace(settings, timesteps=int(timesteps))


def load_event_frames(name: str, data_dir: str | None, frames: FrameSettings | None = None) -> EventFrames:
    """Both splits of event dataset ``name`` as frames, built into the frame cache on first use.

    Raises ``DataNotFoundError`` (one line: where to put what under ``data_dir``) when the files
    are absent or damaged; ``digits_dvs`` needs none.
    """
    settings = frames if frames is not None else default_frame_settings(name)
    if not isinstance(settings, FrameSettings):
        raise ValueError(f"frames must be a FrameSettings, got {type(settings).__name__}")
    sensor = SENSOR_SIZES[name]
    one = frame_shape(sensor, settings)
    if name == "digits_dvs":
        description, sizes, fill = _digits_dvs_source(settings)
    elif name in RECORDED_DATASETS:
        if data_dir is None:
            raise DataNotFoundError(f"{name} needs --data-dir: the folder that holds its files (nothing is downloaded)")
        description, sizes, fill = _recorded_source(name, os.path.expanduser(data_dir), settings)
    else:
        raise ValueError(f"unknown event dataset {name!r}; valid names: {', '.join(EVENT_DATASETS)}")
    description = {"dataset": name, "sensor_size": list(sensor), "frames": settings.to_json(), **description}
    shapes = {split: (n,) + one for split, n in sizes.items()}
    splits, path = cache.load_or_build(data_dir, description, shapes, fill)
    return EventFrames(*splits["train"], *splits["test"], NUM_CLASSES[name], EVENT_AUGMENT[name], path)


# ----------------------------------------------------------------------------- digits_dvs

DIGITS_DVS_SEED = 0
DIGITS_DVS_VERSION = 1  # bump when the simulation changes: a new cache key


def _digits_dvs_source(settings: FrameSettings):
    train_x, train_y, test_x, test_y = digits_dvs.digits_split()
    data = {"train": (train_x, train_y), "test": (test_x, test_y)}
    digest = hashlib.sha1()
    for images, labels in data.values():
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    description = {"simulation": {"version": DIGITS_DVS_VERSION, "seed": DIGITS_DVS_SEED,
                                  "digits_sha1": digest.hexdigest()}}

    def fill(split, frames_out, labels_out):
        images, labels = data[split]
        # the train and test digits are simulated with different seeds: no shared noise between splits
        x, y, t, p, offsets = digits_dvs.saccade_events(images, seed=[DIGITS_DVS_SEED, split == "test"])
        for i in range(len(images)):
            s = slice(offsets[i], offsets[i + 1])
            counts = frame_counts(x[s].astype(np.int64), y[s].astype(np.int64), t[s], p[s].astype(np.int64),
                                  digits_dvs.SENSOR_SIZE, settings)
            frames_out[i] = to_storage(counts, settings.binarise)
        labels_out[:] = labels

    return description, {split: len(images) for split, (images, _) in data.items()}, fill


# ----------------------------------------------------------------------------- recorded datasets


def _source_entry(source, root: str) -> list:
    """What a source contributes to the cache key: its path under root, its size and, for a segment, its cut."""
    path = source.path if isinstance(source, Segment) else source
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise DataNotFoundError(f"cannot read {path}: {err.strerror or err}") from err
    entry = [os.path.relpath(path, root), size]
    return entry + [source.start_us, source.end_us] if isinstance(source, Segment) else entry


def _recorded_source(name: str, root: str, settings: FrameSettings):
    samples = {split: list_samples(name, root, split) for split in ("train", "test")}
    sources = {split: [_source_entry(source, root) + [label] for source, label in pairs]
               for split, pairs in samples.items()}
    sensor = SENSOR_SIZES[name]

    def fill(split, frames_out, labels_out):
        pairs = samples[split]
        for i, (events, (source, label)) in enumerate(zip(iter_sample_events(s for s, _ in pairs), pairs)):
            try:
                frames_out[i] = frame_events(events, sensor, settings)
            except ValueError as err:  # events outside the sensor: not this dataset's file
                where = source.path if isinstance(source, Segment) else source
                raise DataNotFoundError(f"damaged {name} sample {where}: {err}") from err
            labels_out[i] = label

    return {"sources": sources}, {split: len(pairs) for split, pairs in samples.items()}, fill
