"""Decoders of the event-camera file formats jsnn reads: NumPy only, one vectorised pass per file.

Every reader returns a structured array of ``EVENT_DTYPE`` (x, y, t in microseconds, p with 1 = ON),
in file order. Written from the format descriptions, not from tonic's or SpikingJelly's code:

- N-MNIST ``.bin`` (Orchard et al. 2015, garrickorchard.com/datasets/n-mnist): 5-byte big-endian ATIS
  records, bits 39-32 x, 31-24 y, bit 23 polarity, 22-0 timestamp (us).
- DVS Gesture ``.npy`` as tonic's download stores it: an (N, 4) array, columns x, y, p, t in ms.
- AEDAT 3.1 (IBM's original DVS Gesture release; inivation's AEDAT 3.1 description): ``#`` header lines up
  to ``#!END-HEADER``, then packets of a 28-byte little-endian header and eventCapacity * eventSize bytes.
- AEDAT 2.0 (the original CIFAR10-DVS release on figshare): ``#`` header lines, then big-endian u32
  (address, timestamp) pairs.
- AEDAT 4 (tonic's CIFAR10-DVS copy): through the ``aedat`` package (``pip install "jsnn[events]"``).

A file that cannot be decoded (truncated record, unreadable header) raises ``DataNotFoundError`` with one
line naming the file, so a damaged download is reported like a missing one.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from jsnn.data.errors import DataNotFoundError

# One event layout for all of jsnn. int16 coordinates hold every sensor here (<= 128 px); t is int64 us.
EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])

# (W, H, P) as tonic gives them (tonic.datasets.*.sensor_size).
SENSOR_SIZES = {"nmnist": (34, 34, 2), "dvs_gesture": (128, 128, 2), "cifar10_dvs": (128, 128, 2)}
NUM_CLASSES = {"nmnist": 10, "dvs_gesture": 11, "cifar10_dvs": 10}
EVENT_DATASETS = tuple(SENSOR_SIZES)

# CIFAR10-DVS label = index here (the folder names of both releases; tonic's CIFAR10DVS.classes).
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# DVS Gesture label i = IBM's class i + 1 in the *_labels.csv files (gesture_mapping.csv of the release).
DVS_GESTURE_CLASSES = (
    "hand clapping", "right hand wave", "left hand wave", "right arm clockwise", "right arm counter-clockwise",
    "left arm clockwise", "left arm counter-clockwise", "arm roll", "air drums", "air guitar", "other gestures",
)

# tonic.io.read_mnist_file treats a record with y == 240 as a timestamp-overflow marker: it adds 2**13 us
# to that record and every later one, and drops the record. Real N-MNIST files hold none (timestamps
# stay below 2**23 us); jsnn does the same so that both readers agree on any file.
NMNIST_OVERFLOW_Y = 240
NMNIST_OVERFLOW_US = 2**13
NMNIST_RECORD_BYTES = 5

AEDAT31_PACKET_HEADER = struct.Struct("<hhiiiiii")  # type, source, size, tsOffset, tsOverflow, capacity, number, valid
AEDAT31_POLARITY_TYPE = 1
# A polarity event: u32 data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x), then u32 timestamp.
_AEDAT31_POLARITY = np.dtype([("data", "<u4"), ("ts", "<u4")])
_AEDAT2_WORDS = np.dtype(">u4")
CIFAR10_DVS_SIDE = 128


def make_events(x, y, t, p) -> np.ndarray:
    """A structured ``EVENT_DTYPE`` array from four equal-length columns (cast, not checked)."""
    t = np.asarray(t)
    events = np.empty(t.shape[0], EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def damaged(path, what: str, why: str) -> DataNotFoundError:
    """The one-line error for a file that is there but cannot be decoded."""
    return DataNotFoundError(
        f"damaged {what} file {os.fspath(path)}: {why}; replace it with a fresh copy from the dataset's archive")


def _read_bytes(path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise DataNotFoundError(f"cannot read the {what} file {os.fspath(path)}: {err.strerror or err}") from err


def read_nmnist_bin(path) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` file (34 x 34 sensor; t in us, as recorded).

    Records with y == 240 are timestamp-overflow markers, handled as ``tonic.io.read_mnist_file`` does:
    each adds ``NMNIST_OVERFLOW_US`` to its own and every later timestamp and is dropped.
    """
    what = "N-MNIST .bin"
    raw = np.frombuffer(_read_bytes(path, what), np.uint8)
    if raw.size % NMNIST_RECORD_BYTES:
        raise damaged(path, what, f"{raw.size} bytes is not a whole number of 5-byte records (truncated?)")
    rec = raw.reshape(-1, NMNIST_RECORD_BYTES).astype(np.int64)
    t = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    overflow = rec[:, 1] == NMNIST_OVERFLOW_Y
    t = t + np.cumsum(overflow) * NMNIST_OVERFLOW_US  # the marker counts for itself and all after it
    keep = ~overflow
    return make_events(rec[keep, 0], rec[keep, 1], t[keep], rec[keep, 2] >> 7)


def read_dvs_gesture_npy(path) -> np.ndarray:
    """Events of one DVS Gesture sample as tonic's download stores it: (N, 4) columns x, y, p, t (ms).

    t becomes t * 1000 us, computed in the file's own dtype and then cast, as tonic's ``DVSGesture`` does
    (so a float file truncates the same way); p is 1 where the file's p is nonzero.
    """
    what = "DVS Gesture .npy"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise damaged(path, what, f"numpy cannot load it ({err})") from err
    if array.ndim != 2 or array.shape[1] != 4 or array.dtype.kind not in "iuf":
        raise damaged(path, what, f"expected an (N, 4) numeric array of x, y, p, t, found {array.dtype} "
                                  f"{array.shape}")
    ms = array[:, 3]
    t = ms * ms.dtype.type(1000) if array.dtype.kind == "f" else ms.astype(np.int64) * 1000
    return make_events(array[:, 0], array[:, 1], t.astype(np.int64), array[:, 2] != 0)


def aedat_header_end(data: bytes, path, what: str, version: bytes, end_marker: bytes | None = None) -> int:
    """Byte offset where the binary data starts, after the ``#`` header lines of an AEDAT 2/3 file.

    The first line must start with ``#!AER-DAT<version>``. With ``end_marker``, the header ends after
    that line and it must be present (AEDAT 3.1's ``#!END-HEADER``); otherwise after the last ``#`` line.
    """
    if not data.startswith(b"#!AER-DAT" + version):
        raise damaged(path, what, f"no '#!AER-DAT{version.decode()}' first line (unreadable header)")
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"#":
        newline = data.find(b"\n", pos)
        if newline < 0:
            raise damaged(path, what, "the header ends without a newline (truncated?)")
        line, pos = data[pos:newline], newline + 1
        if end_marker is not None and line.rstrip(b"\r") == end_marker:
            return pos
    if end_marker is not None:
        raise damaged(path, what, f"no '{end_marker.decode()}' line (unreadable header)")
    return pos


def read_aedat2_cifar10dvs(path) -> np.ndarray:
    """Events of one original CIFAR10-DVS ``.aedat`` file (AEDAT 2.0, 128 x 128 DVS).

    Address bits: x = (a >> 1) & 0x7F, y = (a >> 8) & 0x7F, p = a & 1; mapped to x' = 127 - y,
    y' = 127 - x, p' = 1 - p, the orientation and polarity SpikingJelly's CIFAR10DVS gives. t is the
    32-bit timestamp in us.
    """
    what = "CIFAR10-DVS AEDAT 2.0"
    data = _read_bytes(path, what)
    start = aedat_header_end(data, path, what, b"2")
    body = len(data) - start
    if body % (2 * _AEDAT2_WORDS.itemsize):
        raise damaged(path, what, f"{body} bytes of events is not a whole number of 8-byte "
                                  "(address, timestamp) pairs (truncated?)")
    words = np.frombuffer(data, _AEDAT2_WORDS, offset=start).reshape(-1, 2).astype(np.int64)
    address, timestamp = words[:, 0], words[:, 1]
    x, y, p = (address >> 1) & 0x7F, (address >> 8) & 0x7F, address & 1
    top = CIFAR10_DVS_SIDE - 1
    return make_events(top - y, top - x, timestamp, 1 - p)


def read_aedat31_polarity(path) -> np.ndarray:
    """All valid polarity events (packet type 1) of one AEDAT 3.1 recording, in file order.

    x = (a >> 17) & 0x7FFF, y = (a >> 2) & 0x7FFF, p = (a >> 1) & 1; t = timestamp | tsOverflow << 31 (us).
    Packets of other types are skipped. Each packet holds eventCapacity slots of eventSize bytes; its first
    eventNumber events are decoded and those without the validity bit (bit 0) dropped, as the format says
    (SpikingJelly's reader decodes every slot and keeps invalid ones; on a file whose events are all valid,
    as written by the recorder, the two agree).
    """
    what = "AEDAT 3.1"
    data = _read_bytes(path, what)
    pos = aedat_header_end(data, path, what, b"3", end_marker=b"#!END-HEADER")
    chunks = []
    while pos < len(data):  # one step per packet (hundreds of events each), not per event
        if len(data) - pos < AEDAT31_PACKET_HEADER.size:
            raise damaged(path, what, f"truncated packet header at byte {pos}")
        etype, _, size, _, overflow, capacity, number, _ = AEDAT31_PACKET_HEADER.unpack_from(data, pos)
        pos += AEDAT31_PACKET_HEADER.size
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity or overflow < 0:
            raise damaged(path, what, f"bad packet header at byte {pos - AEDAT31_PACKET_HEADER.size} "
                                      f"(eventSize {size}, capacity {capacity}, number {number})")
        if len(data) - pos < capacity * size:
            raise damaged(path, what, f"truncated packet at byte {pos - AEDAT31_PACKET_HEADER.size}")
        if etype == AEDAT31_POLARITY_TYPE:
            if size < _AEDAT31_POLARITY.itemsize:
                raise damaged(path, what, f"polarity events of {size} bytes at byte {pos} (8 expected)")
            ev = np.ndarray((number,), _AEDAT31_POLARITY, buffer=data, offset=pos, strides=(size,))
            ev = ev[(ev["data"] & 1) == 1]
            chunks.append((ev["data"].astype(np.int64), ev["ts"].astype(np.int64) | (overflow << 31)))
        pos += capacity * size
    if not chunks:
        return make_events(*(np.zeros(0, np.int64),) * 4)
    address = np.concatenate([c[0] for c in chunks])
    t = np.concatenate([c[1] for c in chunks])
    return make_events((address >> 17) & 0x7FFF, (address >> 2) & 0x7FFF, t, (address >> 1) & 1)


def read_dvs_gesture_labels(path) -> np.ndarray:
    """The labelled segments of one IBM DVS Gesture recording, from its ``*_labels.csv``.

    Returns int64 ``[K, 3]`` rows (label, start_us, end_us), label = IBM class - 1 (0..10), in file order.
    A sample is the recording's events with start_us <= t < end_us (SpikingJelly's cut).
    """
    what = "DVS Gesture labels .csv"
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as err:
        raise DataNotFoundError(f"cannot read the {what} file {os.fspath(path)}: {err}") from err
    rows = []
    for number, line in enumerate(lines, 1):
        fields = line.split(",")
        if not line or (number == 1 and not fields[0].strip().isdigit()):  # blank, or the column names
            continue
        try:
            label, start, end = (int(v) for v in fields)
        except ValueError:
            raise damaged(path, what, f"line {number} is not 'class,start_us,end_us': {line!r}") from None
        if not 1 <= label <= NUM_CLASSES["dvs_gesture"]:
            raise damaged(path, what, f"line {number}: class {label} is outside 1..11")
        rows.append((label - 1, start, end))
    return np.asarray(rows, np.int64).reshape(-1, 3)


def read_aedat4(path) -> np.ndarray:
    """Events of one AEDAT 4 file (tonic's CIFAR10-DVS copy), through the ``aedat`` package.

    Reads the event stream with the lowest id, as ``tonic.io.read_aedat4`` does; values are kept as
    stored (no remapping).
    """
    what = "AEDAT4"
    try:
        import aedat
    except ImportError as err:
        raise DataNotFoundError(f"{os.fspath(path)} is an AEDAT4 file (tonic's CIFAR10-DVS), read through the "
                                'aedat package: pip install "jsnn[events]"') from err
    try:
        decoder = aedat.Decoder(os.fspath(path))
        ids = [i for i, stream in decoder.id_to_stream().items() if stream["type"] == "events"]
        if not ids:
            raise damaged(path, what, "it has no event stream")
        packets = [packet["events"] for packet in decoder if packet["stream_id"] == min(ids)]
    except DataNotFoundError:
        raise
    except BaseException as err:  # the Rust decoder raises plain exceptions, or a panic (a BaseException)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise damaged(path, what, f"the aedat package cannot decode it ({err})") from err
    if not packets:
        return make_events(*(np.zeros(0, np.int64),) * 4)
    events = np.concatenate(packets)
    return make_events(events["x"], events["y"], events["t"].astype(np.int64), events["on"])
