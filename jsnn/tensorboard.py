"""TensorBoard event files beside metrics.jsonl, so ``tensorboard --logdir WORKDIR`` shows every run.

Each epoch's metrics record (the line metrics.jsonl gets) is also written as scalars, step = the epoch.
The writer is written here, small and synchronous: an ``Event`` protocol buffer encoded by hand (the
few fields a scalar needs, ``EVENT_FIELDS``), framed as a TFRecord with its masked CRC-32C, flushed
after every record. Not tensorboardX: importing it imports torch where torch is installed (seconds at
every program start), and its ``SummaryWriter`` writes from a background thread whose ``flush`` does not
wait for the queue. TensorBoard's own reader is the test's reference (tests/test_tensorboard.py).

A run's segments are TensorBoard runs of their own, so IMP's rounds and edge-popup's levels overlay:
``WORKDIR/tensorboard/`` for a run of one segment, ``WORKDIR/tensorboard/round_3/`` for IMP round 3
(the record's label, ``LABEL_KEYS``). Tags: ``TAGS`` (loss, accuracy, sparsity, SynOps per image,
learning rate, speed); any other number a record holds is written under its own key.

A process opens one event file per TensorBoard run and flushes it after every record. A resumed run
writes the epochs it redoes again: it first writes a ``SessionLog.START`` at the epoch it resumes from,
TensorBoard's mark of a restart, on which TensorBoard drops the points it has at that step and later (the
ones written before the interruption), so every epoch shows once.
"""
from __future__ import annotations

import atexit
import os
import socket
import struct
import time

LOGDIR = "tensorboard"
LABEL_KEYS = ("round", "sparsity_target")  # what tells a run's segments apart (their plans' segment_label)
TAGS = {
    "loss": "loss/train", "test_loss": "loss/test",
    "train_accuracy": "accuracy/train", "test_accuracy": "accuracy/test",
    "sparsity": "sparsity", "synops_per_image": "synops_per_image", "learning_rate": "learning_rate",
    "images_per_sec": "speed/images_per_sec", "seconds": "speed/epoch_seconds",
}


def run_dir(workdir: str, record: dict) -> str:
    """The TensorBoard run a record belongs to: ``WORKDIR/tensorboard[/round_3][/sparsity_target_0.9]``."""
    parts = [f"{k}_{record[k]}" for k in LABEL_KEYS if k in record]
    return os.path.join(workdir, LOGDIR, *parts)


def scalars(record: dict) -> dict[str, float]:
    """tag -> value of a metrics record's numbers (the epoch and the label left out)."""
    out = {}
    for key, value in record.items():
        if key == "epoch" or key in LABEL_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[TAGS.get(key, key)] = float(value)
    return out


# -- the event file format ---------------------------------------------------------------------------------
# tensorboard/compat/proto/event.proto and summary.proto, the fields used here: Event {1: double wall_time,
# 2: int64 step, 3: string file_version, 5: Summary summary, 7: SessionLog session_log}; Summary {1: repeated
# Value value}; Value {1: string tag, 2: float simple_value}; SessionLog {1: enum status, START = 1}.
EVENT_FIELDS = {"wall_time": 1, "step": 2, "file_version": 3, "summary": 5, "session_log": 7}
SESSION_START = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:  # wire type 2: length-delimited
    return _field(number, 2, _varint(len(data)) + data)


def event(wall_time: float, step: int = 0, *, file_version: str | None = None, scalar: tuple[str, float] | None = None,
          session_start: bool = False) -> bytes:
    """One serialised ``Event``: the file-version record, a scalar, or a restart mark."""
    out = _field(EVENT_FIELDS["wall_time"], 1, struct.pack("<d", wall_time))
    if step:
        out += _field(EVENT_FIELDS["step"], 0, _varint(step))
    if file_version is not None:
        out += _bytes_field(EVENT_FIELDS["file_version"], file_version.encode())
    if scalar is not None:
        tag, value = scalar
        summary_value = _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
        out += _bytes_field(EVENT_FIELDS["summary"], _bytes_field(1, summary_value))
    if session_start:
        out += _bytes_field(EVENT_FIELDS["session_log"], _field(1, 0, _varint(SESSION_START)))
    return out


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), table-driven: the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as a TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked(crc32c(length))) + data + struct.pack("<I", _masked(crc32c(data)))


# -- writing -----------------------------------------------------------------------------------------------
_writers: dict = {}  # logdir -> [open file, the last step written]
_opened: list = []  # every logdir this process opened a file in


def write_record(workdir: str, record: dict) -> None:
    """Writes one epoch's record as scalars at step ``record["epoch"]``, flushed to disk."""
    logdir, step, now = run_dir(workdir, record), int(record["epoch"]), time.time()
    writer = _writers.get(logdir)
    if writer is None or not os.path.exists(writer[0].name):  # (a workdir removed and made again: a new file)
        os.makedirs(logdir, exist_ok=True)
        _opened.append(logdir)
        # TensorBoard's name (time in seconds, host), with pid and count: never the name of an earlier file
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.{len(_opened)}"
        writer = _writers[logdir] = [open(os.path.join(logdir, name), "ab"), None]
        writer[0].write(tfrecord(event(now, file_version="brain.Event:2")))
    f, last = writer
    if last is None or step <= last:  # a start, or a resume: what was written from this step on is stale
        f.write(tfrecord(event(now, step, session_start=True)))
    for tag, value in scalars(record).items():
        f.write(tfrecord(event(now, step, scalar=(tag, value))))
    f.flush()
    writer[1] = step


@atexit.register
def close_all() -> None:
    """Closes this process's event files (each was flushed after its last record)."""
    while _writers:
        _writers.popitem()[1][0].close()
