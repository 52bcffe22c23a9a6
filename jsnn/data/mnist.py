"""MNIST and Fashion-MNIST from the four IDX files their sites publish (gzip or not).

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic -- two zero bytes, the element
type (0x08 = unsigned byte) and the number of dimensions -- then each dimension as a big-endian
uint32, then the values in C order. Images are ``0x00000803`` [N, 28, 28], labels ``0x00000801`` [N].
Fashion-MNIST (Xiao et al. 2017) uses the same four file names and format.

Where the files are looked for, under ``data_dir``, in order (``candidate_folders``): the folder
itself, torchvision's layout (``MNIST/raw/``, ``FashionMNIST/raw/``) and a folder named after the
dataset (``mnist/``, ``fashion_mnist/``, Zalando's ``fashion/``). Each file may be gzipped (told by
its first bytes, not its name) and named as published (``train-images-idx3-ubyte[.gz]``) or with the
dot some mirrors use (``train-images.idx3-ubyte``). Nothing is downloaded.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from jsnn.data.errors import DataNotFoundError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_UBYTE = 0x08

# the four files: (split, kind) -> published name
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

# name -> (display name, torchvision's folder, other folders it is kept in, where the files are published)
IDX_DATASETS = {
    "mnist": ("MNIST", "MNIST", ("mnist",), "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("Fashion-MNIST", "FashionMNIST", ("fashion_mnist", "fashion"),
                      "https://github.com/zalandoresearch/fashion-mnist"),
}


class IdxError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes."""


def parse_idx(raw: bytes) -> np.ndarray:
    """The uint8 array an IDX file's bytes hold (header checked against the data's length)."""
    if len(raw) < 4:
        raise IdxError(f"{len(raw)} bytes, shorter than the 4-byte magic")
    zero0, zero1, kind, ndim = raw[:4]
    if zero0 or zero1 or kind != _UBYTE or not 1 <= ndim <= 4:
        raise IdxError(f"magic 0x{int.from_bytes(raw[:4], 'big'):08x} is not an IDX file of unsigned bytes "
                       "(0x000008NN)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"cut short inside its header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise IdxError(f"its header says {'x'.join(map(str, dims))} = {size} values, it holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx(path: str) -> np.ndarray:
    """An IDX file, gzipped or not (told by the gzip magic 1f 8b, whatever the name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxError(f"a damaged gzip file ({err})") from err
    return parse_idx(raw)


def _variants(name: str) -> list[str]:
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte (some mirrors, Kaggle)
    return [name, name + ".gz", dotted, dotted + ".gz"]


def candidate_folders(name: str, data_dir: str) -> list[str]:
    """Where ``name``'s files are looked for under ``data_dir``, in order."""
    _, torchvision_folder, others, _ = IDX_DATASETS[name]
    return [data_dir, os.path.join(data_dir, torchvision_folder, "raw"),
            *(os.path.join(data_dir, o) for o in others)]


def _find(folder: str, name: str) -> str | None:
    for variant in _variants(name):
        path = os.path.join(folder, variant)
        if os.path.isfile(path):
            return path
    return None


def find_idx_files(name: str, data_dir: str) -> tuple[dict, str | None]:
    """({(split, kind): path} of the first candidate folder holding all four files (empty if none),
    and the folder holding the most of them, for the message when none holds all)."""
    best, best_count = None, 0
    for folder in candidate_folders(name, data_dir):
        found = {key: _find(folder, f) for key, f in FILES.items()}
        count = sum(p is not None for p in found.values())
        if count == len(FILES):
            return found, folder
        if count > best_count:
            best, best_count = folder, count
    return {}, best


def _damaged(display: str, path: str, reason: str, url: str) -> DataNotFoundError:
    return DataNotFoundError(f"{display}: {path} is damaged ({reason}); replace it with "
                             f"{os.path.basename(path)} as published at {url}")


def load_idx_splits(name: str, paths: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images uint8 [N, H, W, 1], train labels, test images, test labels) from the four files,
    each checked: the magic of its kind, images and labels of one count, labels 0..9."""
    display, _, _, url = IDX_DATASETS[name]
    arrays = {}
    for (split, kind), path in paths.items():
        try:
            array = read_idx(path)
        except IdxError as err:
            raise _damaged(display, path, str(err), url) from err
        want = 3 if kind == "images" else 1
        if array.ndim != want:
            magic = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC
            raise _damaged(display, path, f"{array.ndim} dimensions where {kind} have {want} (magic 0x{magic:08x})",
                           url)
        if kind == "labels" and array.size and array.max() > 9:
            raise _damaged(display, path, f"a label {int(array.max())} outside 0..9", url)
        arrays[split, kind] = array
    for split in ("train", "test"):
        images, labels = arrays[split, "images"], arrays[split, "labels"]
        if len(images) != len(labels):
            raise _damaged(display, paths[split, "labels"], f"{len(labels)} labels for the {len(images)} images "
                           f"of {paths[split, 'images']}", url)
    return (arrays["train", "images"][..., None], arrays["train", "labels"].astype(np.int32),
            arrays["test", "images"][..., None], arrays["test", "labels"].astype(np.int32))


def not_found_message(name: str, data_dir: str, partial_folder: str | None) -> str:
    """One line: which files go where (and which are missing from the folder that holds some)."""
    display, torchvision_folder, _, url = IDX_DATASETS[name]
    names = [FILES[k] for k in FILES]
    line = (f"{display} not found under {data_dir}: put {', '.join(n + '[.gz]' for n in names)} from {url} into "
            f"{data_dir} (or {os.path.join(data_dir, torchvision_folder, 'raw')}/, torchvision's layout), "
            f"or prepare a tfds '{name}' data source there in array_record format; nothing is downloaded")
    if partial_folder is not None:
        missing = [n for n in names if _find(partial_folder, n) is None]
        line += f" ({partial_folder} lacks {', '.join(missing)})"
    if name == "mnist":
        line += " (offline: python benchmarks/mnist_files.py DIR rebuilds the official files)"
    return line
