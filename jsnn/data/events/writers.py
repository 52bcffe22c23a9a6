"""Writers of the event file formats in ``readers.py``: small exact inverses, for tests and stand-in data.

Each takes a structured array of ``readers.EVENT_DTYPE`` and writes one file that its reader (and tonic's,
where tonic reads the format) decodes back to the same x, y, t, p. Values the format cannot hold raise
``ValueError``.
"""

from __future__ import annotations

import struct

import numpy as np

from jsnn.data.events.readers import (
    _AEDAT31_POLARITY,
    AEDAT31_PACKET_HEADER,
    AEDAT31_POLARITY_TYPE,
    CIFAR10_DVS_SIDE,
    NMNIST_OVERFLOW_Y,
    NMNIST_RECORD_BYTES,
)


def _columns(events):
    return (np.asarray(events[name], np.int64) for name in ("x", "y", "t", "p"))


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def write_nmnist_bin(path, events) -> None:
    """N-MNIST / ATIS 40-bit records: x, y < 256 with y != 240 (the overflow marker), 0 <= t < 2**23 us."""
    x, y, t, p = _columns(events)
    if len(t):
        _check(x.min() >= 0 and y.min() >= 0 and x.max() < 256 and y.max() < 256, "x and y must be in 0..255")
        _check(not (y == NMNIST_OVERFLOW_Y).any(), "y == 240 is N-MNIST's timestamp-overflow marker")
        _check(t.min() >= 0 and t.max() < 2**23, "t must be in 0 .. 2**23 - 1 us")
        _check(np.isin(p, (0, 1)).all(), "p must be 0 or 1")
    records = np.empty((len(t), NMNIST_RECORD_BYTES), np.uint8)
    records[:, 0], records[:, 1] = x, y
    records[:, 2] = (p << 7) | (t >> 16)
    records[:, 3], records[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    records.tofile(path)


def write_dvs_gesture_npy(path, events, dtype=np.int64) -> None:
    """A tonic-style DVS Gesture ``.npy``: (N, 4) columns x, y, p, t in ms (t must be whole ms)."""
    x, y, t, p = _columns(events)
    _check((t % 1000 == 0).all(), "tonic's DVS Gesture files hold t in whole ms: t must be a multiple of 1000 us")
    np.save(path, np.stack([x, y, p, t // 1000], axis=1).astype(dtype))


def write_aedat2_cifar10dvs(path, events) -> None:
    """An original-style CIFAR10-DVS AEDAT 2.0 file (inverse of ``read_aedat2_cifar10dvs``'s remapping)."""
    x, y, t, p = _columns(events)
    top = CIFAR10_DVS_SIDE - 1
    if len(t):
        _check(min(x.min(), y.min()) >= 0 and max(x.max(), y.max()) <= top, "x and y must be in 0..127")
        _check(t.min() >= 0 and t.max() < 2**32, "t must fit in 32 bits")
        _check(np.isin(p, (0, 1)).all(), "p must be 0 or 1")
    raw_x, raw_y, raw_p = top - y, top - x, 1 - p
    words = np.stack([(raw_y << 8) | (raw_x << 1) | raw_p, t], axis=1).astype(">u4")
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT2.0\r\n# This is a raw AE data file, written by jsnn.data.events.writers\r\n")
        f.write(words.tobytes())


def write_aedat31_gesture(path, events, packet_events: int = 4096, source: int = 1) -> None:
    """An AEDAT 3.1 recording like IBM's DVS Gesture files: polarity packets of <= ``packet_events`` events.

    A packet never straddles a 2**31 us boundary (its header holds the timestamps' high bits).
    """
    x, y, t, p = _columns(events)
    if len(t):
        _check(min(x.min(), y.min()) >= 0 and max(x.max(), y.max()) < 2**15, "x and y must be in 0..32767")
        _check(t.min() >= 0 and (np.diff(t) >= 0).all(), "t must be sorted and non-negative")
        _check(np.isin(p, (0, 1)).all(), "p must be 0 or 1")
    polarity = np.empty(len(t), _AEDAT31_POLARITY)
    polarity["data"] = (x << 17) | (y << 2) | (p << 1) | 1  # bit 0: valid
    polarity["ts"] = t & (2**31 - 1)
    overflow = t >> 31
    bounds = sorted({0, len(t), *range(0, len(t), packet_events), *np.flatnonzero(np.diff(overflow)) + 1})
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
        for start, end in zip(bounds[:-1], bounds[1:]):
            n = end - start
            f.write(AEDAT31_PACKET_HEADER.pack(AEDAT31_POLARITY_TYPE, source, _AEDAT31_POLARITY.itemsize, 4,
                                               int(overflow[start]), n, n, n))
            f.write(polarity[start:end].tobytes())


def write_dvs_gesture_labels(path, rows) -> None:
    """A ``*_labels.csv`` of IBM's release from rows (label 0..10, start_us, end_us): class = label + 1."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("class,startTime_usec,endTime_usec\n")
        for label, start, end in rows:
            f.write(f"{int(label) + 1},{int(start)},{int(end)}\n")


# AEDAT 4: a flatbuffers IOHeader (with the stream description as XML) after the magic line, then packets
# of (u32 stream id, u32 size, size-prefixed flatbuffers EventPacket "EVTS"). Built by hand for one event
# stream, uncompressed: the layouts below follow flatbuffers' wire format (tables with a vtable, vectors
# with a u32 length), so the file reads back through the ``aedat`` package and ``tonic.io.read_aedat4``.
_AEDAT4_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])
_AEDAT4_DESCRIPTION = (
    '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
    '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
    '<attr key="compression" type="string">NONE</attr>'
    '<attr key="typeIdentifier" type="string">EVTS</attr>'
    '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
    '<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
    "</node></node></node></dv>"
)


def _aedat4_ioheader(description: bytes) -> bytes:
    # 0: root offset -> table at 20 | 4: "IOHE" | 8: vtable (10 bytes: size, table size, compression absent,
    # file_data_position absent (-1: read to the end), description at +4), 2 pad | 20: table (soffset to
    # vtable, offset to string) | 28: string (u32 length, bytes, NUL), padded to 4.
    text = description + b"\0"
    head = struct.pack("<I4sHHHHH2xiI", 20, b"IOHE", 10, 8, 0, 0, 4, 20 - 8, 28 - 24)
    body = struct.pack("<I", len(description)) + text
    return head + body + b"\0" * (-len(body) % 4)


def _aedat4_event_packet(chunk: np.ndarray) -> bytes:
    # 0: u32 size prefix | 4: root offset -> table at 20 | 8: "EVTS" | 12: vtable (size 6, table size 8,
    # elements at +4), 2 pad | 20: table (soffset 8 back to the vtable, offset 4 to the vector) | 28: vector
    # length | 32: the 16-byte Event structs, 8-aligned from the buffer's start as flatbuffers requires.
    body = struct.pack("<I4sHHH2xiII", 20 - 4, b"EVTS", 6, 8, 4, 20 - 12, 28 - 24, len(chunk)) + chunk.tobytes()
    return struct.pack("<I", len(body)) + body


def write_aedat4(path, events, sensor_size=(128, 128), packet_events: int = 4096) -> None:
    """An uncompressed AEDAT 4 file with one event stream (id 0) of ``sensor_size`` (W, H)."""
    x, y, t, p = _columns(events)
    structs = np.zeros(len(t), _AEDAT4_EVENT)
    structs["t"], structs["x"], structs["y"], structs["on"] = t, x, y, p
    description = _AEDAT4_DESCRIPTION.format(width=sensor_size[0], height=sensor_size[1]).encode()
    header = _aedat4_ioheader(description)
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header)
        for start in range(0, len(t), packet_events):
            packet = _aedat4_event_packet(structs[start:start + packet_events])
            f.write(struct.pack("<II", 0, len(packet)) + packet)
