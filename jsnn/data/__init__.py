"""Data for jsnn: in-memory and streamed (tfds) datasets, on-device augmentation, host batching.

Importing this package does not import tensorflow-datasets or scikit-learn;
they are loaded only by the dataset that needs them.
"""

from jsnn.data.augment import (
    AugmentConfig,
    AugmentParams,
    apply_augment,
    augment_batch,
    normalize,
    sample_augment_params,
)
from jsnn.data.batches import (
    epoch_permutation,
    eval_batches,
    gather,
    num_batches,
    shard_for_process,
    train_batches,
)
from jsnn.data.datasets import (
    CIFAR_AUGMENT,
    DATASET_NAMES,
    DIGITS_AUGMENT,
    ArrayDataset,
    DatasetNames,
    channel_stats,
    default_data_dir,
    load_dataset,
)
from jsnn.data.errors import DataNotFoundError
from jsnn.data.events.frames import FrameSettings
from jsnn.data.events.loader import EVENT_AUGMENT, EVENT_DATASETS, default_frame_settings
from jsnn.data.feed import process_eval_batches, process_train_batches
from jsnn.data.streaming import TFDS_PREFIX, StreamedDataset, is_tfds_name

__all__ = [
    "ArrayDataset",
    "AugmentConfig",
    "AugmentParams",
    "CIFAR_AUGMENT",
    "DATASET_NAMES",
    "DIGITS_AUGMENT",
    "TFDS_PREFIX",
    "DataNotFoundError",
    "DatasetNames",
    "EVENT_AUGMENT",
    "EVENT_DATASETS",
    "FrameSettings",
    "StreamedDataset",
    "apply_augment",
    "augment_batch",
    "channel_stats",
    "default_data_dir",
    "default_frame_settings",
    "epoch_permutation",
    "eval_batches",
    "gather",
    "is_tfds_name",
    "load_dataset",
    "normalize",
    "num_batches",
    "process_eval_batches",
    "process_train_batches",
    "sample_augment_params",
    "shard_for_process",
    "train_batches",
]
