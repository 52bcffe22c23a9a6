"""TensorBoard event files beside metrics.jsonl, so ``tensorboard --logdir WORKDIR`` shows every run.

Each epoch's metrics record (the line metrics.jsonl gets) is also written as scalars, step = the epoch,
with tensorboardX's protos and its synchronous event-file writer (``EventsWriter``: TFRecord framing,
masked CRC-32C; no TensorFlow). Not its ``SummaryWriter``: that one writes from a background thread,
and its ``flush`` does not wait for the queue, so an epoch's scalars could be missing from disk after
it. A run's segments are TensorBoard runs of their own, so IMP's rounds and edge-popup's levels
overlay: ``WORKDIR/tensorboard/`` for a run of one segment, ``WORKDIR/tensorboard/round_3/`` for IMP
round 3 (the record's label, ``LABEL_KEYS``). Tags: ``TAGS`` (loss, accuracy, sparsity, SynOps per
image, learning rate, speed); any other number a record holds is written under its own key.

A process opens one event file per TensorBoard run and flushes it after every record. A resumed run
writes the epochs it redoes again: it first writes a ``SessionLog.START`` at the epoch it resumes from,
TensorBoard's mark of a restart, on which TensorBoard drops the points it has at that step and later (the
ones written before the interruption), so every epoch shows once.
"""
from __future__ import annotations

import atexit
import os
import time

LOGDIR = "tensorboard"
LABEL_KEYS = ("round", "sparsity_target")  # what tells a run's segments apart (their plans' segment_label)
TAGS = {
    "loss": "loss/train", "test_loss": "loss/test",
    "train_accuracy": "accuracy/train", "test_accuracy": "accuracy/test",
    "sparsity": "sparsity", "synops_per_image": "synops_per_image", "learning_rate": "learning_rate",
    "images_per_sec": "speed/images_per_sec", "seconds": "speed/epoch_seconds",
}

_writers: dict = {}  # logdir -> [EventsWriter, the last step written]
_opened: list = []  # every logdir this process opened a file in


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


def write_record(workdir: str, record: dict) -> None:
    """Writes one epoch's record as scalars at step ``record["epoch"]``, flushed to disk."""
    # here: importing jsnn does not import protobuf
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar

    logdir, step, now = run_dir(workdir, record), int(record["epoch"]), time.time()
    open_writer = _writers.get(logdir)
    if open_writer is None or not os.path.exists(open_writer[0]._file_name):  # (a workdir removed and made again)
        os.makedirs(logdir, exist_ok=True)
        # pid and count in the name (which holds the time in seconds): never the name of an earlier file
        _opened.append(logdir)
        open_writer = _writers[logdir] = [EventsWriter(os.path.join(logdir, "events"),
                                                       filename_suffix=f".{os.getpid()}.{len(_opened)}"), None]
    writer, last = open_writer
    if last is None or step <= last:  # a start, or a resume: what was written from this step on is stale
        writer.write_event(Event(wall_time=now, step=step, session_log=SessionLog(status=SessionLog.START)))
    for tag, value in scalars(record).items():
        writer.write_event(Event(wall_time=now, step=step, summary=scalar(tag, value)))
    writer.flush()
    open_writer[1] = step


@atexit.register
def close_all() -> None:
    """Closes this process's event files (each was flushed after its last record)."""
    while _writers:
        _writers.popitem()[1][0].close()
