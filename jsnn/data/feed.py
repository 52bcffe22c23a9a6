"""What one process feeds its devices: its rows of each global batch, from any dataset.

An in-memory dataset (``ArrayDataset``) builds each global batch on every process and keeps this
process's rows (``batches.shard_for_process``); a streamed one (``StreamedDataset``) reads only
those rows. Either way the rows are the same for the same ``(seed, epoch, batch)``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from jsnn.data.batches import eval_batches, shard_for_process, train_batches


def process_train_batches(dataset, batch_size: int, seed: int, epoch: int,
                          start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This process's ``(images, labels)`` of train batches ``start_batch ..`` of ``epoch``."""
    if hasattr(dataset, "process_train_batches"):
        yield from dataset.process_train_batches(batch_size, seed, epoch, start_batch)
        return
    for images, labels in train_batches(dataset.train_images, dataset.train_labels, batch_size, seed, epoch,
                                        start_batch):
        yield shard_for_process(images, labels)


def process_eval_batches(dataset, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This process's ``(images, labels, valid)`` of each test batch (valid: 1.0 real row, 0.0 padding)."""
    if hasattr(dataset, "process_eval_batches"):
        yield from dataset.process_eval_batches(batch_size)
        return
    for images, labels, n_real in eval_batches(dataset.test_images, dataset.test_labels, batch_size):
        valid = (np.arange(len(labels)) < n_real).astype(np.float32)
        yield shard_for_process(images, labels, valid)
