"""Deterministic, resumable batch iteration on the host.

Batches stay uint8 here (4x less host->device transfer than float32); the
jitted step casts, augments and normalises on device.

The order of an epoch depends only on ``(seed, epoch)``, so a run restarted
from a checkpoint that stored ``(epoch, batch index)`` sees exactly the batches
it would have seen, and every process of a multi-host run builds the same
global batch and takes its own slice of it (``shard_for_process``).

Event datasets are memory-mapped frame caches (``jsnn.data.events.cache``):
``gather`` reads a batch's rows in file order and only those rows, so an epoch
never pulls the whole file into memory at once (the OS page cache keeps what fits).
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch for ``n`` examples."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch, a pure function of ``(seed, epoch)``.

    Seeding NumPy with the pair (rather than advancing one generator epoch by
    epoch) means resuming at epoch e needs no replay of epochs 0..e-1.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def gather(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``array[indices]`` as an in-memory array, reading the rows in ascending order.

    For a memmap, ascending reads are sequential where rows are close together
    (read-ahead works, each page is touched once) instead of a random walk over the
    file; the rows are then put back in the order asked for.
    """
    indices = np.asarray(indices)
    if not isinstance(array, np.memmap):
        return array[indices]
    order = np.argsort(indices, kind="stable")
    rows = np.asarray(array[indices[order]])
    out = np.empty_like(rows)
    out[order] = rows
    return out


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields the shuffled batches of one epoch, starting at ``start_batch``.

    The last incomplete batch is dropped (``drop_last=True``) so the jitted
    train step always sees one shape; a different permutation each epoch means
    the dropped examples differ from epoch to epoch.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    order = epoch_permutation(n, seed, epoch)
    for b in range(start_batch, num_batches(n, batch_size, drop_last=True)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield gather(images, idx), labels[idx]


def eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yields ``(images, labels, num_real)`` in order, covering every example once.

    The last batch is padded with zeros up to ``batch_size`` so the
    jitted eval step keeps one shape; only its first ``num_real`` rows count,
    e.g. weight by ``np.arange(batch_size) < num_real``.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    for start in range(0, n, batch_size):
        x = np.asarray(images[start : start + batch_size])  # a memmap's slice read into memory
        y = labels[start : start + batch_size]
        num_real = len(x)
        if num_real < batch_size:
            pad = batch_size - num_real
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros((pad,) + y.shape[1:], y.dtype)])
        yield x, y, num_real


def shard_for_process(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """This process's contiguous slice of each global batch array (axis 0).

    With P processes, process p takes rows ``[p * B/P, (p + 1) * B/P)``; the
    global batch must divide evenly. With one process this is the identity.
    Pass an eval mask (``np.arange(B) < num_real``) along with the images and
    labels to know which local rows are real.
    """
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return arrays
    out = []
    for a in arrays:
        if len(a) % count:
            raise ValueError(f"global batch of {len(a)} does not split over {count} processes")
        per = len(a) // count
        out.append(a[index * per : (index + 1) * per])
    return tuple(out)
