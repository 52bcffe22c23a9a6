"""Where each event dataset's files lie under the data directory, which of them make a split, and reading one.

``list_samples(dataset, root, split)`` finds the files of the layouts tonic's downloads leave and of the
original archives, and returns ``(source, label)`` pairs in a fixed order (natural sort of folder and file
names, so ``user2`` < ``user10``; tonic leaves DVS Gesture unsorted). It never downloads and needs no
minimum file count; when nothing is found it raises ``DataNotFoundError`` with one line that says where to
put what. A source is a file path, or a ``Segment`` (path, start_us, end_us) of an IBM DVS Gesture
recording; ``read_sample`` / ``iter_sample_events`` turn sources into ``EVENT_DTYPE`` arrays.

Layouts, under ``root`` (= ``--data-dir``):

- ``nmnist``: ``NMNIST/{Train,Test}/<digit>/*.bin`` (tonic's ``NMNIST``, same as Orchard's ``Train.zip``
  and ``Test.zip`` extracted), or ``{Train,Test}/<digit>/*.bin`` directly under root.
- ``dvs_gesture``: ``DVSGesture/ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy`` (tonic's
  ``DVSGesture``; also without the ``DVSGesture/`` level); else IBM's ``DvsGesture.tar.gz`` extracted to
  ``DvsGesture/`` (or ``DVSGesture/DvsGesture/``, ``DVSGesture/``, root): ``userNN_<lighting>.aedat``,
  ``userNN_<lighting>_labels.csv``, ``trials_to_train.txt``, ``trials_to_test.txt``. A sample of the
  original release is one labelled segment of a recording, start_us <= t < end_us (SpikingJelly's cut;
  timestamps stay those of the recording).
- ``cifar10_dvs``: ``CIFAR10DVS/<class>/*.aedat4`` (tonic's ``CIFAR10DVS``, read through the ``aedat``
  extra) or the figshare ``<class>.zip`` archives extracted to ``CIFAR10DVS/<class>/*.aedat`` (AEDAT 2.0);
  also ``<class>/`` directly under root. Where both kinds are present the ``.aedat`` files are read.
  CIFAR10-DVS has no official split: ``train``/``test`` is the TEBN split (Duan et al., NeurIPS 2022;
  SpikingJelly's ``CIFAR10DVSTEBNSplit``): per class, samples 0-99 are the test set and 100-999 the train
  set, numbered by the integer that ends the file name (``cifar10_airplane_17.aedat`` is 17), or by position
  in the sorted folder where names do not end in distinct integers. SpikingJelly's docstring warns that
  accuracy on it is higher than on a random split. ``split="all"`` returns every sample, for other splits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Union

import numpy as np

from jsnn.data.errors import DataNotFoundError
from jsnn.data.events.readers import (
    CIFAR10_DVS_CLASSES,
    EVENT_DATASETS,
    NUM_CLASSES,
    damaged,
    read_aedat2_cifar10dvs,
    read_aedat4,
    read_aedat31_polarity,
    read_dvs_gesture_labels,
    read_dvs_gesture_npy,
    read_nmnist_bin,
)

SPLITS = ("train", "test")
CIFAR10_DVS_TEST_PER_CLASS = 100  # TEBN split: samples 0-99 of each class are the test set


class Segment(NamedTuple):
    """One labelled gesture of an IBM DVS Gesture AEDAT 3.1 recording: events with start_us <= t < end_us."""

    path: str
    start_us: int
    end_us: int


Source = Union[str, Segment]  # what list_samples pairs with a label and read_sample reads

_DISPLAY = {"nmnist": "N-MNIST", "dvs_gesture": "DVS Gesture", "cifar10_dvs": "CIFAR10-DVS"}


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value (``user2`` < ``user10``); ties by the name."""
    return tuple(int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", name)) + (name,)


def layout_hint(dataset: str, root) -> str:
    """The folders ``list_samples`` reads for ``dataset``, spelled out under ``root``, as one phrase."""
    j = os.path.join
    if dataset == "nmnist":
        return (f"Train/<digit>/*.bin and Test/<digit>/*.bin in {j(root, 'NMNIST')}/ (tonic's NMNIST download, "
                f"or Orchard's Train.zip and Test.zip extracted there or in {root}/)")
    if dataset == "dvs_gesture":
        return (f"tonic's ibmGestureTrain/ and ibmGestureTest/ (userNN_<lighting>/<label>.npy) in "
                f"{j(root, 'DVSGesture')}/, or IBM's DvsGesture.tar.gz extracted to {j(root, 'DvsGesture')}/ "
                "(userNN_<lighting>.aedat, userNN_<lighting>_labels.csv, trials_to_train.txt, trials_to_test.txt)")
    if dataset == "cifar10_dvs":
        return (f"<class>/*.aedat4 (tonic's CIFAR10DVS download) or <class>/*.aedat (the figshare <class>.zip "
                f"archives extracted) in {j(root, 'CIFAR10DVS')}/, <class> = {'|'.join(CIFAR10_DVS_CLASSES)}")
    raise ValueError(f"unknown event dataset {dataset!r}; valid names: {', '.join(EVENT_DATASETS)}")


def _not_found(dataset: str, root, split: str, detail: str = "") -> DataNotFoundError:
    return DataNotFoundError(
        f"{_DISPLAY[dataset]} {split} files not found under {os.fspath(root)}{detail}: put "
        f"{layout_hint(dataset, root)}; nothing is downloaded; then pass --data-dir {os.fspath(root)}")


def _subdirs(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if e.is_dir()), key=lambda e: natural_key(e.name))


def _files(folder: str, suffix: str) -> list[str]:
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.endswith(suffix) and e.is_file()]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def list_samples(dataset: str, root, split: str) -> list[tuple[Source, int]]:
    """``(source, label)`` for every sample of ``split`` (``train`` / ``test``; ``all`` for cifar10_dvs).

    Sources are file paths (str), or ``Segment``s for IBM's original DVS Gesture recordings. The order is
    fixed by natural sort of folder and file names (see the module docstring for layouts and the CIFAR10-DVS
    TEBN split). Raises ``DataNotFoundError`` (one line with the expected layout) when no sample is found,
    and for a damaged or incomplete original DVS Gesture listing (labels .csv, missing recording).
    """
    if dataset not in EVENT_DATASETS:
        raise ValueError(f"unknown event dataset {dataset!r}; valid names: {', '.join(EVENT_DATASETS)}")
    splits = SPLITS + (("all",) if dataset == "cifar10_dvs" else ())
    if split not in splits:
        raise ValueError(f"unknown split {split!r} for {dataset}; valid: {', '.join(splits)}")
    root = os.fspath(root)
    samples = {"nmnist": _nmnist, "dvs_gesture": _dvs_gesture, "cifar10_dvs": _cifar10_dvs}[dataset](root, split)
    if not samples:
        raise _not_found(dataset, root, split)
    return samples


def _nmnist(root: str, split: str) -> list:
    folder = {"train": "Train", "test": "Test"}[split]
    for base in (os.path.join(root, "NMNIST", folder), os.path.join(root, folder)):
        if not os.path.isdir(base):
            continue
        samples = [(path, int(d.name)) for d in _subdirs(base) if d.name in tuple("0123456789")
                   for path in _files(d.path, ".bin")]
        if samples:
            return samples
    return []


def _dvs_gesture(root: str, split: str) -> list:
    folder = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}[split]
    for base in (os.path.join(root, "DVSGesture", folder), os.path.join(root, folder)):
        if not os.path.isdir(base):
            continue
        samples = []
        for user in _subdirs(base):
            for path in _files(user.path, ".npy"):
                stem = os.path.basename(path)[:-4]
                if not stem.isdigit():
                    continue  # tonic's files are named <label>.npy; anything else is not a sample
                if int(stem) >= NUM_CLASSES["dvs_gesture"]:
                    raise damaged(path, "DVS Gesture .npy", f"label {stem} from the file name is outside 0..10")
                samples.append((path, int(stem)))
        if samples:
            return samples
    for base in (os.path.join(root, "DvsGesture"), os.path.join(root, "DVSGesture", "DvsGesture"),
                 os.path.join(root, "DVSGesture"), root):
        trials = os.path.join(base, f"trials_to_{split}.txt")
        if os.path.isfile(trials):
            return _dvs_gesture_original(root, base, trials, split)
    return []


def _dvs_gesture_original(root: str, base: str, trials: str, split: str) -> list:
    try:
        with open(trials, encoding="utf-8") as f:
            names = sorted({line.strip() for line in f if line.strip()}, key=natural_key)
    except (OSError, UnicodeDecodeError) as err:
        raise DataNotFoundError(f"cannot read the DVS Gesture trial list {trials}: {err}") from err
    samples = []
    for name in names:
        recording = os.path.join(base, name)
        labels = os.path.join(base, os.path.splitext(name)[0] + "_labels.csv")
        for path in (recording, labels):
            if not os.path.isfile(path):
                raise _not_found("dvs_gesture", root, split, f" ({path}, listed in {trials}, is missing)")
        samples += [(Segment(recording, int(start), int(end)), int(label))
                    for label, start, end in read_dvs_gesture_labels(labels)]
    return samples


def _tebn_numbers(paths: list[str]) -> list[int]:
    """Each file's sample number: the integer ending its name if all names end in distinct ones, else position."""
    found = [re.search(r"(\d+)$", os.path.splitext(os.path.basename(p))[0]) for p in paths]
    numbers = [int(m.group(1)) for m in found if m]
    if len(numbers) == len(paths) and len(set(numbers)) == len(numbers):
        return numbers
    return list(range(len(paths)))


def _cifar10_dvs(root: str, split: str) -> list:
    for base in (os.path.join(root, "CIFAR10DVS"), root):
        folders = [(os.path.join(base, c), label) for label, c in enumerate(CIFAR10_DVS_CLASSES)
                   if os.path.isdir(os.path.join(base, c))]
        original = [(_files(folder, ".aedat"), label) for folder, label in folders]
        listed = original if any(paths for paths, _ in original) else [
            (_files(folder, ".aedat4"), label) for folder, label in folders]
        samples = [(path, label) for paths, label in listed for path, number in zip(paths, _tebn_numbers(paths))
                   if split == "all" or (number < CIFAR10_DVS_TEST_PER_CLASS) == (split == "test")]
        if any(paths for paths, _ in listed):
            if not samples:
                count = sum(len(paths) for paths, _ in listed)
                raise _not_found("cifar10_dvs", root, split, f" (the {count} files in {base} are all in the other "
                                 "half of the TEBN split: per class, samples numbered 0-99 test, 100-999 train)")
            return samples
    return []


def _cut(events: np.ndarray, segment: Segment) -> np.ndarray:
    t = events["t"]
    return events[(t >= segment.start_us) & (t < segment.end_us)]


def read_sample(source: Source) -> np.ndarray:
    """The ``EVENT_DTYPE`` events of one source from ``list_samples``, chosen by its kind and file suffix.

    ``.bin`` N-MNIST, ``.npy`` tonic's DVS Gesture, ``.aedat4`` AEDAT 4, ``.aedat`` AEDAT 2.0 (CIFAR10-DVS)
    or 3.1 (a whole recording) by its header, ``Segment`` a cut of an AEDAT 3.1 recording.
    """
    if isinstance(source, Segment):
        return _cut(read_aedat31_polarity(source.path), source)
    path = os.fspath(source)
    if path.endswith(".bin"):
        return read_nmnist_bin(path)
    if path.endswith(".npy"):
        return read_dvs_gesture_npy(path)
    if path.endswith(".aedat4"):
        return read_aedat4(path)
    if path.endswith(".aedat"):
        try:
            with open(path, "rb") as f:
                version = f.read(10)
        except OSError as err:
            raise DataNotFoundError(f"cannot read the AEDAT file {path}: {err.strerror or err}") from err
        return read_aedat31_polarity(path) if version == b"#!AER-DAT3" else read_aedat2_cifar10dvs(path)
    raise ValueError(f"no event reader for {path!r} (expected .bin, .npy, .aedat or .aedat4)")


def iter_sample_events(sources: Iterable[Source]) -> Iterator[np.ndarray]:
    """``read_sample`` over many sources; consecutive segments of one recording decode it only once."""
    recording_path, recording = None, None
    for source in sources:
        if isinstance(source, Segment):
            if source.path != recording_path:
                recording_path, recording = source.path, read_aedat31_polarity(source.path)
            yield _cut(recording, source)
        else:
            yield read_sample(source)
