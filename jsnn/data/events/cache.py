"""The frame cache: each event dataset's frames computed once, stored as memory-mappable ``.npy``.

One directory per (dataset, frame settings, source files): its name is the sha1 of the canonical
JSON of everything the frames depend on (``description``, which the loader fills with the
dataset, the frame settings, the sensor, the ordered source files with their sizes) plus
``FORMAT_VERSION``. It holds ``<split>_frames.npy`` (uint8 ``[N, T, H, W, 2]``, written through
``np.lib.format.open_memmap`` one sample at a time, so a build never holds a split in memory),
``<split>_labels.npy`` (int32 ``[N]``) and ``meta.json``.

A build writes into a fresh temporary directory next to the final one and renames it into place
only when every file is written, so an interrupted build (an exception, a kill) never leaves a
directory under the key's name: the next run builds again. (A killed build leaves its
``.<key>.tmp-*`` directory behind; it is never read and can be deleted.) Two processes building
the same key at once both finish; the first rename wins and the other's copy is removed.
SpikingJelly, by contrast, skips a build once the folder exists, so an interrupted build leaves a
silently incomplete cache (an interrupted conversion must not pass for a finished one).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable

import numpy as np

from jsnn.data.errors import DataNotFoundError

# Bump when the layout or the meaning of the stored frames changes: old caches are then ignored.
FORMAT_VERSION = 1
CACHE_ENV = "JSNN_CACHE_DIR"
META_FILE = "meta.json"


def cache_key(description: dict) -> str:
    """sha1 of the canonical JSON (sorted keys, no spaces) of ``description`` and the format version."""
    canonical = json.dumps({"description": description, "format_version": FORMAT_VERSION},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()


def user_cache_dir() -> str:
    """``$XDG_CACHE_HOME/jsnn`` or ``~/.cache/jsnn``."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jsnn")


def cache_dirs(data_dir: str | None) -> list[str]:
    """Where frames are looked for, in order; the first writable one is where a build goes.

    ``$JSNN_CACHE_DIR`` alone when set; otherwise ``<data_dir>/jsnn_frames`` (next to the data it
    came from) and then the user cache, for a data directory that cannot be written.
    """
    if os.environ.get(CACHE_ENV):
        return [os.path.expanduser(os.environ[CACHE_ENV])]
    dirs = [os.path.join(os.path.expanduser(data_dir), "jsnn_frames")] if data_dir else []
    return dirs + [user_cache_dir()]


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def load_or_build(data_dir: str | None, description: dict, shapes: dict[str, tuple[int, ...]],
                  fill: Callable[[str, np.ndarray, np.ndarray], None]) -> tuple[dict, str]:
    """The cached frames of ``description``, built first if no cache holds them.

    Args:
      data_dir: the dataset's folder (``cache_dirs``).
      description: JSON-able dict of everything the frames depend on; it names the cache entry.
      shapes: split -> shape of its frames array ``(N, T, H, W, 2)``.
      fill: ``fill(split, frames, labels)`` writes every row of the split's uint8 frames
        (a writable memmap) and int32 labels.

    Returns:
      ``({split: (frames, labels)}, path)``: frames are read-only memmaps
      (``np.load(mmap_mode="r")``), labels in-memory int32 arrays.
    """
    key = cache_key(description)
    dirs = cache_dirs(data_dir)
    for folder in dirs:
        path = os.path.join(folder, key)
        if os.path.isdir(path):
            return open_entry(path, shapes), path
    for folder in dirs:
        if _writable(folder):
            path = os.path.join(folder, key)
            build_entry(folder, key, description, shapes, fill)
            return open_entry(path, shapes), path
    raise DataNotFoundError(f"no writable frame cache directory among {', '.join(dirs)} "
                            f"(set ${CACHE_ENV} to a folder that can be written)")


def build_entry(folder: str, key: str, description: dict, shapes: dict[str, tuple[int, ...]],
                fill: Callable[[str, np.ndarray, np.ndarray], None]) -> str:
    """Builds the entry in a temporary directory and renames it to ``folder/key`` on success."""
    final = os.path.join(folder, key)
    tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=folder)
    try:
        start = time.perf_counter()
        for split, shape in shapes.items():
            frames = np.lib.format.open_memmap(os.path.join(tmp, f"{split}_frames.npy"), mode="w+",
                                               dtype=np.uint8, shape=tuple(shape))
            labels = np.zeros(shape[0], np.int32)
            fill(split, frames, labels)
            frames.flush()
            del frames  # closes the map before the rename
            np.save(os.path.join(tmp, f"{split}_labels.npy"), labels)
        meta = {"description": description, "format_version": FORMAT_VERSION,
                "shapes": {split: list(shape) for split, shape in shapes.items()},
                "build_seconds": time.perf_counter() - start}
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # not a lost race with another builder: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def open_entry(path: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """``{split: (frames memmap, labels)}`` of a finished entry; a damaged one gets one line."""
    out = {}
    try:
        for split, shape in shapes.items():
            frames = np.load(os.path.join(path, f"{split}_frames.npy"), mmap_mode="r")
            labels = np.load(os.path.join(path, f"{split}_labels.npy")).astype(np.int32)
            if frames.shape != tuple(shape) or frames.dtype != np.uint8 or labels.shape != (shape[0],):
                raise ValueError(f"{split} frames are {frames.dtype} {frames.shape}, expected uint8 {tuple(shape)}")
            out[split] = (frames, labels)
    except (OSError, ValueError, EOFError) as err:
        raise DataNotFoundError(f"damaged frame cache {path} ({err}); delete that folder and it is rebuilt") from err
    return out
