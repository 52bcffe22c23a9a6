"""TensorBoard event files beside metrics.jsonl (jsnn/tensorboard.py), read back two ways: with
TensorBoard's own reader, and by hand from the TFRecord framing with a bitwise CRC-32C written here."""
import glob
import json
import os
import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator  # the reference reader (the test extra)
from tensorboard.compat.proto import event_pb2

from jsnn import tensorboard
from jsnn.metrics import append_epoch
from jsnn.runs import imp
from jsnn.runs.outputs import Outputs
from jsnn.runs.run import Run


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """TFRecord's masked CRC: rotate right by 15, add 0xa282ead8 (mod 2^32)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records_by_hand(path: str) -> list[bytes]:
    """A TFRecord file's payloads: [uint64 length][uint32 masked crc of length][data][uint32 masked crc of data],
    little-endian, every CRC checked."""
    raw, out, at = open(path, "rb").read(), [], 0
    while at < len(raw):
        header = raw[at:at + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", raw[at + 8:at + 12])
        assert length_crc == masked(crc32c(header))
        data = raw[at + 12:at + 12 + length]
        assert struct.unpack("<I", raw[at + 12 + length:at + 16 + length])[0] == masked(crc32c(data))
        out.append(data)
        at += 16 + length
    return out


def read_back(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard loads the run in ``logdir``."""
    acc = event_accumulator.EventAccumulator(logdir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_records_round_trip_through_tensorboards_reader(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"sparsity_target": 0.9, "epoch": e, "loss": 2.0 / e, "train_accuracy": 0.1 * e,
                "learning_rate": 0.3 / e, "sparsity": 0.9, "test_accuracy": 0.5 + 0.01 * e, "test_loss": 1.0 / e,
                "synops_per_image": 1234.5 * e, "images_per_sec": 100.0, "seconds": 1.5} for e in (1, 2, 3)]
    for r in records:
        append_epoch(str(metrics), r)
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == records
    logdir = tmp_path / "tensorboard" / "sparsity_target_0.9"
    scalars = read_back(str(logdir))
    expected = {"loss/train": "loss", "loss/test": "test_loss", "accuracy/train": "train_accuracy",
                "accuracy/test": "test_accuracy", "sparsity": "sparsity", "synops_per_image": "synops_per_image",
                "learning_rate": "learning_rate", "speed/images_per_sec": "images_per_sec",
                "speed/epoch_seconds": "seconds"}
    assert set(scalars) == set(expected)
    for tag, key in expected.items():
        assert [s for s, _ in scalars[tag]] == [1, 2, 3]
        np.testing.assert_array_equal([v for _, v in scalars[tag]], np.float32([r[key] for r in records]))
    # the framing and every CRC, checked without TensorBoard: the file version record, the start mark, then
    # one record per scalar
    (path,) = glob.glob(str(logdir / "events.out.tfevents.*"))
    payloads = records_by_hand(path)
    assert b"brain.Event:2" in payloads[0] and len(payloads) == 2 + 3 * len(expected)
    # and each parsed by TensorBoard's own protos
    events = [event_pb2.Event.FromString(p) for p in payloads]
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 1 and events[1].session_log.status == event_pb2.SessionLog.START
    last = events[-1]
    assert last.step == 3 and last.summary.value[0].tag == "speed/epoch_seconds"
    assert last.summary.value[0].simple_value == 1.5


def test_an_imp_run_writes_every_epoch_of_every_round(digits_imp, tmp_path):
    """Every metrics.jsonl record is in its round's TensorBoard run, SynOps per image included; at a
    round's last epoch the SynOps equal the round's cost report (the same count on the same ticket)."""
    _, config, _, trainer = digits_imp
    options = imp.IMPOptions(rounds=2, rewind_epoch=1).resolve(config)
    results = Run(imp.IMPPlan(config, options), config, str(tmp_path), trainer=trainer,
                  outputs=Outputs(plots=False)).execute()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 0, 1, 1]
    for k in (0, 1):
        scalars = read_back(str(tmp_path / "tensorboard" / f"round_{k}"))
        mine = [r for r in records if r["round"] == k]
        for tag, key in (("loss/train", "loss"), ("accuracy/test", "test_accuracy"), ("sparsity", "sparsity"),
                         ("learning_rate", "learning_rate"), ("synops_per_image", "synops_per_image")):
            assert scalars[tag] == [(r["epoch"], pytest.approx(np.float32(r[key]))) for r in mine], tag
        assert mine[-1]["synops_per_image"] == results["runs"][k]["efficiency"]["synops_per_image"] > 0
    assert records[-1]["sparsity"] > records[0]["sparsity"] == 0.0


def test_run_dir_and_scalars():
    assert tensorboard.run_dir("/w", {"epoch": 1}) == os.path.join("/w", "tensorboard")
    assert tensorboard.run_dir("/w", {"round": 3, "epoch": 1}) == os.path.join("/w", "tensorboard", "round_3")
    assert tensorboard.scalars({"epoch": 2, "round": 1, "loss": 1, "flag": True, "note": "x", "new_metric": 0.5}) == \
        {"loss/train": 1.0, "new_metric": 0.5}


def test_a_resumed_run_shows_each_epoch_once(tmp_path):
    """A restart (a new process: a new file) and a resume in the same process both mark the restart
    (SessionLog START), and TensorBoard's reader drops the points written from that step on."""
    for e in (1, 2, 3):
        tensorboard.write_record(str(tmp_path), {"epoch": e, "loss": float(e)})
    tensorboard.close_all()  # the process ends; the next one resumes from epoch 1's checkpoint
    for e in (2, 3):
        tensorboard.write_record(str(tmp_path), {"epoch": e, "loss": 10.0 * e})
    assert read_back(str(tmp_path / "tensorboard"))["loss/train"] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    tensorboard.write_record(str(tmp_path), {"epoch": 3, "loss": 5.0})  # resumed in the same process
    assert read_back(str(tmp_path / "tensorboard"))["loss/train"] == [(1, 1.0), (2, 20.0), (3, 5.0)]
    assert len(glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))) == 2
