"""Event-file readers (jsnn.data.events.readers / layouts / writers) against tonic's own readers, hand-made bytes
decoded by hand, round trips through the writers, and the folder layouts, splits and errors of list_samples."""
import os
import sys
from unittest import mock

import numpy as np
import pytest

from jsnn.data.errors import DataNotFoundError
from jsnn.data.events import layouts, readers, writers
from jsnn.data.events.layouts import Segment, iter_sample_events, list_samples, read_sample
from jsnn.data.events.readers import EVENT_DTYPE, make_events
from tests.optional import Optional

tonic_datasets = Optional("tonic.datasets")  # tonic's own readers, the reference (tests using them skip without it)
tonic_io = Optional("tonic.io")


def random_events(rng, n, width, height, t_max, step=1):
    t = np.sort(rng.integers(0, t_max // step, n)) * step
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n))


def nmnist_events(rng, n=300):
    ev = random_events(rng, n, 34, 34, 2**23)
    return ev


def same_events(ours, x, y, t, p):
    """ours (EVENT_DTYPE) equals the columns exactly, in order."""
    assert ours.dtype == EVENT_DTYPE
    for name, col in zip("xytp", (x, y, t, p)):
        np.testing.assert_array_equal(ours[name].astype(np.int64), np.asarray(col).astype(np.int64), err_msg=name)


def one_line(err):
    message = str(err.value)
    assert "\n" not in message
    return message


# --- N-MNIST ---------------------------------------------------------------------------------------------


def test_nmnist_bin_matches_tonic_read_mnist_file_with_overflow_markers(tmp_path):
    rng = np.random.default_rng(0)
    ev = nmnist_events(rng, 500)
    path = tmp_path / "a.bin"
    writers.write_nmnist_bin(path, ev)
    records = np.fromfile(path, np.uint8).reshape(-1, 5)
    marker = np.array([[7, 240, 0x85, 3, 9]], np.uint8)  # y == 240: overflow marker, other bytes arbitrary
    records = np.concatenate([records[:100], marker, records[100:300], marker, marker, records[300:]])
    records.tofile(path)
    theirs = tonic_io.read_mnist_file(str(path), dtype=tonic_datasets.NMNIST.dtype)
    ours = readers.read_nmnist_bin(path)
    same_events(ours, theirs["x"], theirs["y"], theirs["t"], theirs["p"])
    assert len(ours) == 500 and ours["t"][150] == ev["t"][150] + 2**13 and ours["t"][400] == ev["t"][400] + 3 * 2**13


def test_nmnist_bin_by_hand(tmp_path):
    # (x=1, y=2, ON, t=5), an overflow marker, (x=3, y=4, OFF, t=0x010203 = 66051)
    (tmp_path / "h.bin").write_bytes(bytes.fromhex("0102800005" "00F0000000" "0304010203"))
    same_events(readers.read_nmnist_bin(tmp_path / "h.bin"), [1, 3], [2, 4], [5, 66051 + 8192], [1, 0])


def test_nmnist_round_trip_and_writer_limits(tmp_path):
    ev = nmnist_events(np.random.default_rng(1))
    writers.write_nmnist_bin(tmp_path / "r.bin", ev)
    np.testing.assert_array_equal(readers.read_nmnist_bin(tmp_path / "r.bin"), ev)
    bad = ev.copy()
    bad["y"][3] = 240
    with pytest.raises(ValueError, match="240"):
        writers.write_nmnist_bin(tmp_path / "b.bin", bad)


def make_nmnist_tree(base, rng, per_digit=2):
    expected = {}
    for split in ("Train", "Test"):
        for digit in (0, 3, 9):
            folder = base / split / str(digit)
            folder.mkdir(parents=True)
            for i in range(per_digit):
                ev = nmnist_events(rng, 50 + i)
                writers.write_nmnist_bin(folder / f"{i + 1:05d}.bin", ev)
                expected[str(folder / f"{i + 1:05d}.bin")] = (ev, digit)
    return expected


def test_nmnist_list_samples_against_tonic_dataset(tmp_path):
    expected = make_nmnist_tree(tmp_path / "NMNIST", np.random.default_rng(2))
    for train, split in ((True, "train"), (False, "test")):
        with mock.patch.object(tonic_datasets.NMNIST, "_check_exists", return_value=True):
            ds = tonic_datasets.NMNIST(str(tmp_path), train=train)
        samples = list_samples("nmnist", tmp_path, split)
        assert [s for s, _ in samples] == ds.data  # tonic sorts N-MNIST too: same order
        assert [label for _, label in samples] == ds.targets == [0, 0, 3, 3, 9, 9]
        for i, (source, label) in enumerate(samples):
            theirs, target = ds[i]
            same_events(read_sample(source), theirs["x"], theirs["y"], theirs["t"], theirs["p"])
            np.testing.assert_array_equal(read_sample(source), expected[source][0])


def test_nmnist_original_archive_folders_directly_under_root(tmp_path):
    make_nmnist_tree(tmp_path, np.random.default_rng(3), per_digit=1)
    samples = list_samples("nmnist", tmp_path, "test")
    assert [os.path.relpath(s, tmp_path) for s, _ in samples] == [f"Test/{d}/00001.bin" for d in (0, 3, 9)]


# --- DVS Gesture ------------------------------------------------------------------------------------------


def test_dvs_gesture_npy_against_tonic_dataset_and_sorted_order(tmp_path):
    rng = np.random.default_rng(4)
    base = tmp_path / "DVSGesture" / "ibmGestureTrain"
    written = {}
    for user in ("user10_led", "user2_fluorescent", "user02_natural"):
        for label in (10, 0, 7):
            (base / user).mkdir(parents=True, exist_ok=True)
            ev = random_events(rng, 40, 128, 128, 6_000_000, step=1000)
            writers.write_dvs_gesture_npy(base / user / f"{label}.npy", ev)
            written[str(base / user / f"{label}.npy")] = (ev, label)
    with mock.patch.object(tonic_datasets.DVSGesture, "_check_exists", return_value=True):
        ds = tonic_datasets.DVSGesture(str(tmp_path), train=True)
    samples = list_samples("dvs_gesture", tmp_path, "train")
    rel = [os.path.relpath(s, base) for s, _ in samples]
    assert rel == [f"{u}/{n}.npy" for u in ("user2_fluorescent", "user02_natural", "user10_led") for n in (0, 7, 10)]
    assert sorted(ds.data) == sorted(s for s, _ in samples)
    for i, path in enumerate(ds.data):  # tonic's order is the filesystem's: match by path
        theirs, target = ds[i]
        ours = read_sample(path)
        same_events(ours, theirs["x"], theirs["y"], theirs["t"], theirs["p"])
        np.testing.assert_array_equal(ours, written[path][0])
        assert dict(samples)[path] == target == written[path][1]


def test_dvs_gesture_float_npy_matches_tonic(tmp_path):
    """A float file: t * 1000 in the file's dtype, then cast, in both readers."""
    (tmp_path / "DVSGesture" / "ibmGestureTest" / "user01_led").mkdir(parents=True)
    path = tmp_path / "DVSGesture" / "ibmGestureTest" / "user01_led" / "3.npy"
    np.save(path, np.array([[1.0, 2.0, 1.0, 0.25], [127.0, 0.0, 0.0, 5999.5]], np.float32))
    with mock.patch.object(tonic_datasets.DVSGesture, "_check_exists", return_value=True):
        theirs, target = tonic_datasets.DVSGesture(str(tmp_path), train=False)[0]
    same_events(read_sample(str(path)), theirs["x"], theirs["y"], theirs["t"], theirs["p"])
    same_events(read_sample(str(path)), [1, 127], [2, 0], [250, 5999500], [1, 0])


def test_aedat31_by_hand(tmp_path):
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    packet1 = bytes.fromhex(
        "0100 0100 08000000 04000000 00000000 02000000 02000000 01000000"  # polarity, 2 events, 1 valid
        "CB00C800 7B000000"  # data 0x00C800CB: x=100, y=50, ON, valid; t=123
        "08000200 C8000000")  # data 0x00020008: valid bit 0 -> dropped
    packet2 = bytes.fromhex("0000 0100 08000000 04000000 00000000 01000000 01000000 01000000 FFFFFFFF FFFFFFFF")
    packet3 = bytes.fromhex(
        "0100 0100 08000000 04000000 01000000 01000000 01000000 01000000"  # tsOverflow = 1
        "FD010000 05000000")  # data 0x1FD: x=0, y=127, OFF, valid; t = 5 + 2**31
    (tmp_path / "h.aedat").write_bytes(header + packet1 + packet2 + packet3)
    same_events(readers.read_aedat31_polarity(tmp_path / "h.aedat"), [100, 0], [50, 127], [123, 2**31 + 5], [1, 0])
    same_events(read_sample(str(tmp_path / "h.aedat")), [100, 0], [50, 127], [123, 2**31 + 5], [1, 0])


def test_aedat31_round_trip_with_small_packets_and_overflow(tmp_path):
    rng = np.random.default_rng(5)
    ev = random_events(rng, 1000, 128, 128, 2**32)
    writers.write_aedat31_gesture(tmp_path / "r.aedat", ev, packet_events=64)
    np.testing.assert_array_equal(readers.read_aedat31_polarity(tmp_path / "r.aedat"), ev)


def make_gesture_original(base, rng):
    """Two recordings, their label csvs and the trial lists; returns {recording: (events, rows)}."""
    base.mkdir(parents=True)
    recordings = {}
    for name in ("user10_led", "user2_fluorescent"):
        ev = random_events(rng, 2000, 128, 128, 10_000_000)
        rows = [(4, 1_000_000, 3_000_000), (0, 3_000_000, 3_000_000), (10, 2_500_000, 9_000_000)]
        writers.write_aedat31_gesture(base / f"{name}.aedat", ev, packet_events=300)
        writers.write_dvs_gesture_labels(base / f"{name}_labels.csv", rows)
        recordings[str(base / f"{name}.aedat")] = (ev, rows)
    (base / "trials_to_train.txt").write_text("user10_led.aedat\nuser2_fluorescent.aedat\n\n")
    (base / "trials_to_test.txt").write_text("user2_fluorescent.aedat\n")
    return recordings


def test_dvs_gesture_original_segments_labels_and_order(tmp_path):
    recordings = make_gesture_original(tmp_path / "DvsGesture", np.random.default_rng(6))
    samples = list_samples("dvs_gesture", tmp_path, "train")
    first = str(tmp_path / "DvsGesture" / "user2_fluorescent.aedat")
    assert [s.path for s, _ in samples][:3] == [first] * 3  # natural order: user2 before user10
    assert [label for _, label in samples] == [4, 0, 10] * 2
    assert samples[0][0] == Segment(first, 1_000_000, 3_000_000)
    for (segment, label), events in zip(samples, iter_sample_events(s for s, _ in samples)):
        ev, _ = recordings[segment.path]
        inside = [e for e in ev.tolist() if segment.start_us <= e[2] < segment.end_us]  # a loop over events
        assert events.tolist() == inside
        np.testing.assert_array_equal(read_sample(segment), events)
    assert len(list_samples("dvs_gesture", tmp_path, "test")) == 3
    empty = samples[1][0]  # the (0, 3 s, 3 s) row: an empty [start, start) segment
    assert empty.start_us == empty.end_us == 3_000_000 and read_sample(empty).size == 0


def test_iter_sample_events_decodes_each_recording_once(tmp_path):
    make_gesture_original(tmp_path / "DvsGesture", np.random.default_rng(11))
    sources = [s for s, _ in list_samples("dvs_gesture", tmp_path, "train")]
    with mock.patch.object(layouts, "read_aedat31_polarity", wraps=readers.read_aedat31_polarity) as read:
        events = list(iter_sample_events(sources))
    assert read.call_count == 2 and len(events) == 6
    for source, ev in zip(sources, events):
        np.testing.assert_array_equal(ev, read_sample(source))


def test_dvs_gesture_labels_csv_by_hand(tmp_path):
    (tmp_path / "u_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,10,20\n11,30,40\n\n")
    np.testing.assert_array_equal(readers.read_dvs_gesture_labels(tmp_path / "u_labels.csv"),
                                  [[0, 10, 20], [10, 30, 40]])


# --- CIFAR10-DVS ------------------------------------------------------------------------------------------


def test_aedat2_cifar10dvs_by_hand(tmp_path):
    words = bytes.fromhex(
        "00000A0B 000003E8"  # a = (10 << 8) | (5 << 1) | 1: raw x=5, y=10, p=1; t=1000
        "00007F00 01020304")  # raw x=0, y=127, p=0; t=0x01020304
    (tmp_path / "h.aedat").write_bytes(b"#!AER-DAT2.0\r\n# a comment\r\n" + words)
    # x' = 127 - y, y' = 127 - x, p' = 1 - p
    expected = ([117, 0], [122, 127], [1000, 0x01020304], [0, 1])
    same_events(readers.read_aedat2_cifar10dvs(tmp_path / "h.aedat"), *expected)
    same_events(read_sample(str(tmp_path / "h.aedat")), *expected)


def test_aedat2_round_trip(tmp_path):
    ev = random_events(np.random.default_rng(7), 700, 128, 128, 2**32)
    writers.write_aedat2_cifar10dvs(tmp_path / "r.aedat", ev)
    np.testing.assert_array_equal(readers.read_aedat2_cifar10dvs(tmp_path / "r.aedat"), ev)


def test_aedat4_against_tonic_read_aedat4_and_cifar10dvs_dataset(tmp_path):
    pytest.importorskip("aedat")
    rng = np.random.default_rng(8)
    written = {}
    for label, cls in ((0, "airplane"), (9, "truck")):
        (tmp_path / "CIFAR10DVS" / cls).mkdir(parents=True)
        for i in (0, 1, 100):
            path = tmp_path / "CIFAR10DVS" / cls / f"cifar10_{cls}_{i}.aedat4"
            ev = random_events(rng, 5000, 128, 128, 2**40)
            writers.write_aedat4(path, ev, packet_events=1024)
            written[str(path)] = (ev, label)
    some = next(iter(written))
    theirs = tonic_io.read_aedat4(some)
    same_events(readers.read_aedat4(some), theirs["x"], theirs["y"], theirs["t"], theirs["on"])
    with mock.patch.object(tonic_datasets.CIFAR10DVS, "_check_exists", return_value=True):
        ds = tonic_datasets.CIFAR10DVS(str(tmp_path))
    both = dict(list_samples("cifar10_dvs", tmp_path, "all"))
    assert sorted(both) == sorted(ds.data) == sorted(written)
    for i, path in enumerate(ds.data):
        theirs, target = ds[i]
        same_events(read_sample(path), theirs["x"], theirs["y"], theirs["t"], theirs["p"])
        np.testing.assert_array_equal(read_sample(path), written[path][0])
        assert both[path] == target == written[path][1]
    test = list_samples("cifar10_dvs", tmp_path, "test")
    train = list_samples("cifar10_dvs", tmp_path, "train")
    assert [os.path.basename(s) for s, _ in test] == [f"cifar10_{c}_{i}.aedat4" for c in ("airplane", "truck")
                                                      for i in (0, 1)]
    assert [(os.path.basename(s), y) for s, y in train] == [("cifar10_airplane_100.aedat4", 0),
                                                            ("cifar10_truck_100.aedat4", 9)]


def test_cifar10dvs_tebn_split_original_files(tmp_path):
    empty = make_events(*(np.zeros(0),) * 4)
    for cls in ("bird", "cat"):
        (tmp_path / cls).mkdir()
        for i in range(103):
            writers.write_aedat2_cifar10dvs(tmp_path / cls / f"cifar10_{cls}_{i}.aedat", empty)
        (tmp_path / cls / "ignored.aedat4").write_bytes(b"")  # the .aedat files win
    test = list_samples("cifar10_dvs", tmp_path, "test")
    train = list_samples("cifar10_dvs", tmp_path, "train")
    assert [os.path.basename(s) for s, _ in test] == [f"cifar10_{c}_{i}.aedat" for c in ("bird", "cat")
                                                      for i in range(100)]
    assert [label for _, label in test] == [2] * 100 + [3] * 100
    assert [(os.path.basename(s), y) for s, y in train] == [(f"cifar10_{c}_{i}.aedat", y) for c, y in
                                                            (("bird", 2), ("cat", 3)) for i in (100, 101, 102)]
    assert read_sample(test[0][0]).size == 0


def test_cifar10dvs_split_by_position_when_names_have_no_numbers(tmp_path):
    (tmp_path / "CIFAR10DVS" / "dog").mkdir(parents=True)
    names = [f"{a}{b}.aedat4" for a in "abcdefghijk" for b in "abcdefghij"]  # 110 files, sorted by name
    for name in names:
        (tmp_path / "CIFAR10DVS" / "dog" / name).write_bytes(b"")
    assert [os.path.basename(s) for s, _ in list_samples("cifar10_dvs", tmp_path, "train")] == names[100:]
    with pytest.raises(DataNotFoundError, match="TEBN split"):
        (tmp_path / "CIFAR10DVS" / "dog" / names[-1]).unlink()
        for name in names[100:-1]:
            (tmp_path / "CIFAR10DVS" / "dog" / name).unlink()
        list_samples("cifar10_dvs", tmp_path, "train")


# --- missing and damaged data -----------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,hint", [
    ("nmnist", "Train/<digit>/*.bin"), ("dvs_gesture", "ibmGestureTrain"), ("cifar10_dvs", "<class>/*.aedat4")])
def test_missing_data_says_where_to_put_what(tmp_path, dataset, hint):
    (tmp_path / "NMNIST" / "Train" / "3").mkdir(parents=True)  # folders without files count as missing
    (tmp_path / "CIFAR10DVS" / "cat").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:
        list_samples(dataset, tmp_path, "train")
    message = one_line(err)
    assert hint in message and str(tmp_path) in message and f"--data-dir {tmp_path}" in message


def test_unknown_names_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        list_samples("mnist_dvs", tmp_path, "train")
    with pytest.raises(ValueError, match="valid: train, test$"):
        list_samples("nmnist", tmp_path, "all")


def write_damaged(kind, path):
    ev = random_events(np.random.default_rng(9), 20, 34, 34, 2**22, step=1000)
    if kind == "nmnist_truncated":
        writers.write_nmnist_bin(path, ev)
        path.write_bytes(path.read_bytes()[:-2])
    elif kind == "npy_truncated":
        writers.write_dvs_gesture_npy(path, ev)
        path.write_bytes(path.read_bytes()[:-5])
    elif kind == "npy_shape":
        np.save(path, np.zeros((3, 5)))
    elif kind == "aedat2_truncated":
        writers.write_aedat2_cifar10dvs(path, ev)
        path.write_bytes(path.read_bytes()[:-3])
    elif kind == "aedat2_no_header":
        path.write_bytes(bytes(16))
    elif kind == "aedat31_truncated_packet":
        writers.write_aedat31_gesture(path, ev)
        path.write_bytes(path.read_bytes()[:-4])
    elif kind == "aedat31_truncated_header":
        writers.write_aedat31_gesture(path, ev)
        path.write_bytes(path.read_bytes() + bytes(10))
    elif kind == "aedat31_no_end_header":
        path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    elif kind == "aedat4_garbage":
        path.write_bytes(b"#!AER-DAT4.0\r\n" + bytes(7))


@pytest.mark.parametrize("kind,suffix,why", [
    ("nmnist_truncated", ".bin", "5-byte records"), ("npy_truncated", ".npy", "numpy cannot load"),
    ("npy_shape", ".npy", r"\(N, 4\)"), ("aedat2_truncated", ".aedat", "8-byte"),
    ("aedat2_no_header", ".aedat", "unreadable header"), ("aedat31_truncated_packet", ".aedat", "truncated packet"),
    ("aedat31_truncated_header", ".aedat", "truncated packet header"),
    ("aedat31_no_end_header", ".aedat", "END-HEADER"), ("aedat4_garbage", ".aedat4", "aedat package cannot")])
def test_damaged_files_name_the_file_in_one_line(tmp_path, kind, suffix, why):
    if suffix == ".aedat4":
        pytest.importorskip("aedat")
    path = tmp_path / f"sample{suffix}"
    write_damaged(kind, path)
    source = Segment(str(path), 0, 10) if kind.startswith("aedat31") else str(path)
    with pytest.raises(DataNotFoundError, match=why) as err:
        read_sample(source)
    assert str(path) in one_line(err) and "damaged" in str(err.value)


def test_damaged_gesture_listing(tmp_path):
    base = tmp_path / "DvsGesture"
    make_gesture_original(base, np.random.default_rng(10))
    (base / "user10_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,0,5\n")
    with pytest.raises(DataNotFoundError, match="class 12 is outside 1..11") as err:
        list_samples("dvs_gesture", tmp_path, "train")
    assert str(base / "user10_led_labels.csv") in one_line(err)
    (base / "user10_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,zero,5\n")
    with pytest.raises(DataNotFoundError, match="line 2"):
        list_samples("dvs_gesture", tmp_path, "train")
    (base / "user10_led.aedat").unlink()
    with pytest.raises(DataNotFoundError, match="user10_led.aedat, listed in") as err:
        list_samples("dvs_gesture", tmp_path, "train")
    assert "DvsGesture.tar.gz" in one_line(err)
    (tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led").mkdir(parents=True)
    np.save(tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led" / "11.npy", np.zeros((1, 4)))
    with pytest.raises(DataNotFoundError, match="outside 0..10"):
        list_samples("dvs_gesture", tmp_path, "train")  # tonic's layout is tried first


def test_aedat4_without_the_aedat_package_says_what_to_install(tmp_path):
    path = tmp_path / "cifar10_cat_0.aedat4"
    path.write_bytes(b"")
    with mock.patch.dict(sys.modules, {"aedat": None}):  # `import aedat` raises ImportError
        with pytest.raises(DataNotFoundError, match=r'pip install "jsnn\[events\]"') as err:
            read_sample(str(path))
    one_line(err)


def test_natural_key_orders_numbers_by_value():
    names = ["user10_led", "user2_led", "user02_led", "user02_fluorescent", "a", "user1_led"]
    assert sorted(names, key=layouts.natural_key) == ["a", "user1_led", "user02_fluorescent", "user02_led",
                                                      "user2_led", "user10_led"]
