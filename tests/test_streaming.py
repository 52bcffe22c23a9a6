"""Streamed tfds datasets (jsnn/data/streaming.py, jsnn/data/feed.py): a real array_record
directory written by a tiny tfds builder, read back through ``--dataset tfds:NAME``.

Image i of the tiny set has every pixel of channel 0 equal to i and of channel 1 equal to its label,
so a batch says which records it holds; the in-memory reference is built from those known values.
"""
import dataclasses
import importlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jsnn import data as jdata
from jsnn.data import streaming

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, SIDE, CLASSES = 40, 13, 8, 3
NAME = "jsnn_tiny_stream"


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")  # lossless: pixel values survive
    return buf.getvalue()


def known_image(i: int) -> np.ndarray:
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = i, i % CLASSES, 255 - i
    return image


class JsnnTinyStream(tfds.core.GeneratorBasedBuilder):
    """40 train and 13 test 8x8 RGB PNGs, written in array_record format as `tfds build` would."""

    VERSION = tfds.core.Version("1.0.0")
    # no code folder (checksums, metadata): tfds would look it up through importlib_resources, which it
    # does not declare and this environment lacks
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(SIDE, SIDE, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=CLASSES)}), supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, N_TRAIN), "test": self._generate_examples(100, N_TEST)}

    def _generate_examples(self, first, n):
        for i in range(first, first + n):
            yield i, {"image": _png(known_image(i)), "label": i % CLASSES}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    JsnnTinyStream(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return str(data_dir)


@pytest.fixture(scope="module")
def streamed(prepared):
    return jdata.load_dataset(f"tfds:{NAME}", prepared)


@pytest.fixture(scope="module")
def in_memory(prepared):
    """The same dataset as an ArrayDataset, every record decoded by tfds itself (its own decoder, not
    jsnn's), in record order (tfds shuffled the examples when it wrote them)."""
    arrays = []
    for split in ("train", "test"):
        source = tfds.data_source(NAME, split=split, data_dir=prepared, download=False)
        records = [source[i] for i in range(len(source))]
        arrays += [np.stack([r["image"] for r in records]), np.array([r["label"] for r in records], np.int32)]
    return jdata.ArrayDataset("ref", *arrays, num_classes=CLASSES, mean=(0.0,) * 3, std=(1.0,) * 3,
                              augment=jdata.AugmentConfig())


def test_streamed_dataset_describes_itself(streamed, in_memory):
    assert isinstance(streamed, jdata.StreamedDataset)
    assert streamed.image_shape == (SIDE, SIDE, 3) and streamed.num_classes == CLASSES
    assert len(streamed.train_labels) == N_TRAIN and len(streamed.test_images) == N_TEST
    # fixed-size images: the device crops (size // 8) and flips, as for CIFAR
    assert streamed.augment == jdata.AugmentConfig(crop_padding=1, flip=True)
    # mean/std from the (all 40, fewer than 512) training images: channel 0 holds the examples' ids 0..39
    assert sorted(in_memory.train_images[:, 0, 0, 0]) == list(range(N_TRAIN))
    ref = jdata.channel_stats(in_memory.train_images)
    np.testing.assert_allclose(streamed.mean, ref[0]) and np.testing.assert_allclose(streamed.std, ref[1])
    # the lazy views decode only the rows asked for, in the order asked
    np.testing.assert_array_equal(streamed.test_images[[3, 0]], in_memory.test_images[[3, 0]])
    np.testing.assert_array_equal(streamed.train_labels[5:9], in_memory.train_labels[5:9])


def test_batches_equal_the_in_memory_ones_and_shards_partition_each_batch(streamed, in_memory):
    """One process: the batches of the in-memory path, same (seed, epoch). Two processes: each reads its
    half of every global batch, disjoint, and together they cover the epoch's batches."""
    batch, seed, epoch = 8, 3, 1
    ref = in_memory
    expected = list(jdata.process_train_batches(ref, batch, seed, epoch))
    got = list(streamed.process_train_batches(batch, seed, epoch, process_index=0, process_count=1))
    assert len(got) == len(expected) == N_TRAIN // batch
    for (x, y), (rx, ry) in zip(got, expected):
        np.testing.assert_array_equal(x, rx) and np.testing.assert_array_equal(y, ry)
    halves = [list(streamed.process_train_batches(batch, seed, epoch, process_index=p, process_count=2))
              for p in (0, 1)]
    records = [np.concatenate([x[:, 0, 0, 0] for x, _ in h]) for h in halves]
    assert not set(records[0]) & set(records[1])
    assert sorted(np.concatenate(records)) == list(range(N_TRAIN))  # 40 = 5 whole batches: every record once
    for b in range(len(expected)):  # process p holds rows [4p, 4p + 4) of global batch b
        np.testing.assert_array_equal(np.concatenate([halves[0][b][0], halves[1][b][0]]), expected[b][0])
    assert list(streamed.process_train_batches(batch, seed, epoch, process_index=1, process_count=2))[0][0].shape[0] \
        == 4


def test_resuming_mid_epoch_reads_the_same_batches_with_host_random_crops(streamed):
    """With a random resized crop on the host (drawn per record, per epoch), the batches from batch 2 on
    equal those of the whole epoch, whatever the number of reading threads; another epoch differs."""
    cropped = dataclasses.replace(streamed, transform=streaming.ImageTransform(channels=3, size=6), threads=1)
    whole = list(cropped.process_train_batches(8, 0, 4, process_index=0, process_count=1))
    resumed = list(dataclasses.replace(cropped, threads=4).process_train_batches(8, 0, 4, 2, process_index=0,
                                                                                  process_count=1))
    assert len(resumed) == len(whole) - 2 and whole[0][0].shape == (8, 6, 6, 3)
    for (x, y), (rx, ry) in zip(resumed, whole[2:]):
        np.testing.assert_array_equal(x, rx) and np.testing.assert_array_equal(y, ry)
    other = next(iter(cropped.process_train_batches(8, 0, 5, process_index=0, process_count=1)))
    assert not np.array_equal(other[0], whole[0][0])


def test_evaluation_streams_every_test_image_once_padded(streamed, in_memory):
    ref = list(jdata.process_eval_batches(in_memory, 8))
    got = list(streamed.process_eval_batches(8, process_index=0, process_count=1))
    assert len(got) == 2 and got[1][2].tolist() == [1.0] * 5 + [0.0] * 3
    for a, b in zip(got, ref):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    rows = [list(streamed.process_eval_batches(8, process_index=p, process_count=2)) for p in (0, 1)]
    real = [x[v > 0, 0, 0, 0] for p in rows for x, _, v in p]
    assert sorted(np.concatenate(real)) == list(range(100, 100 + N_TEST))


def test_image_transform_against_numpy_crops():
    """Evaluation: shorter side to 256 then the centre 224 -- at a shorter side of 256 that is a plain
    crop; training: a crop box inside the image, the same for the same generator state."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    t = streaming.ImageTransform(channels=3, size=224)
    np.testing.assert_array_equal(t.eval(_png(image)), image[16:240, 48:272])
    assert t.train(_png(image), np.random.default_rng(1)).shape == (224, 224, 3)
    np.testing.assert_array_equal(t.train(_png(image), np.random.default_rng(5)),
                                  t.train(_png(image), np.random.default_rng(5)))
    for seed in range(50):
        left, top, right, bottom = streaming.random_resized_crop_box(320, 256, np.random.default_rng(seed))
        area = (right - left) * (bottom - top) / (320 * 256)
        assert 0 <= left < right <= 320 and 0 <= top < bottom <= 256 and 0.07 < area <= 1.0
        assert 3 / 4 - 0.05 < (right - left) / (bottom - top) < 4 / 3 + 0.05


def test_one_epoch_through_the_dense_run_on_the_streamed_dataset(prepared, tmp_path):
    from jsnn.config import TrainConfig
    from jsnn.runs.dense import train_dense
    from jsnn.runs.outputs import Outputs

    config = TrainConfig(dataset=f"tfds:{NAME}", data_dir=prepared, model="digits_cnn", epochs=1, timesteps=1,
                         batch_size=8, progress=False).resolve("dense")
    entry = train_dense(config, str(tmp_path / "run"), outputs=Outputs(plots=False, cost_report=False))
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(records) == 1 and np.isfinite(records[0]["loss"]) and 0.0 <= entry["test_accuracy"] <= 1.0


def test_flags_take_tfds_names_and_a_missing_dataset_is_one_line(tmp_path):
    sys.path.insert(0, str(ROOT / "train"))
    flags = importlib.import_module("flags")
    assert "tfds:imagenet2012" in flags.choices_of("datasets") and "tfds:" not in flags.choices_of("datasets")
    assert "nope" not in flags.choices_of("datasets")
    with pytest.raises(jdata.DataNotFoundError) as err:
        jdata.load_dataset("tfds:svhn_cropped", str(tmp_path))
    line = str(err.value)
    assert "\n" not in line
    assert f"tfds build svhn_cropped --data_dir={tmp_path} --file_format=array_record" in line
    with pytest.raises(jdata.DataNotFoundError, match="ILSVRC2012"):
        jdata.load_dataset("tfds:imagenet2012", str(tmp_path))


def test_two_processes_train_on_the_streamed_dataset_as_one_process_with_as_many_devices(prepared, tmp_path):
    """``train/dense.py --dataset tfds:NAME`` as 2 processes x 1 device (each reading only its rows of every
    batch from the array_record files) and as 1 process x 2 devices: the same weights after the epoch, one
    writer, both processes recorded."""
    from tests.test_multiprocess import finish, launch, ours, recorded_processes, ticket

    flags = ("--dataset", f"tfds:{NAME}", "--data-dir", prepared, "--model", "digits_cnn", "--epochs", "1",
             "-T", "1", "--batch-size", "8", "--no-plots", "--no-cost-report")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    done = finish(launch(1, 2, one, flags=flags) + launch(2, 1, two, flags=flags))
    for code, _, stderr in done:
        assert code == 0, stderr[-3000:]
    assert recorded_processes(one) == (1, 2) and recorded_processes(two) == (2, 2)
    a, b = ticket(one), ticket(two)
    assert a.keys() == b.keys()
    for k in a:  # 5 steps of batch 8 over 40 records
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    assert ours(done[2][1]) == []  # process 1 prints nothing of its own
