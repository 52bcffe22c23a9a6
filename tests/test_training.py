"""Training infrastructure: data parallelism, resume, checkpoints, divergence, metrics, CLI errors."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.checkpoint import CheckpointError
from jsnn.config import TrainConfig
from jsnn.data import load_dataset
from jsnn.models import build_model
from jsnn.runs.dense import DensePlan, dense_signature
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Run
from jsnn.runs.segment import Position, RunCheckpoints
from jsnn.ticket import load_ticket
from jsnn.trainer import Trainer, TrainingDivergedError
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables
from tests.outcomes import crash_after_checkpoint, ticket_accuracy
from tests.programs import run_together
from tests.small_data import EVERY_CHECKPOINT, digits_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def small():
    """A dense digits setup on 256 training images, T = 2: one compilation for the whole module."""
    ds = digits_subset(256, 128)
    config = TrainConfig(dataset="digits", epochs=3, timesteps=2, batch_size=32, progress=False,
                         **EVERY_CHECKPOINT).resolve("dense")
    model = build_model(config, ds.num_classes)
    return config, Trainer(config, model, ds)


def fresh_state(trainer, rule=MaskedTraining(), seed=0):
    variables = init_variables(trainer.model, jax.random.key(seed), (1, 8, 8, 1))
    return trainer.new_state(variables, {}, rule, seed)


def host(tree):
    return jax.tree.map(np.asarray, tree)


def test_eight_devices_equal_one_device():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "scripts", "multidevice_step.py")],
                         env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n_leaves"] > 10
    assert result["max_diff"] < 1e-5
    assert "does not divide over 8 devices" in result["indivisible_error"]
    one, eight = result["evaluation"]["1"], result["evaluation"]["8"]
    assert one["synops_per_image"] == eight["synops_per_image"] > 0  # integer counts: the same sums
    assert one["test_accuracy"] == eight["test_accuracy"]
    assert one["test_loss"] == pytest.approx(eight["test_loss"], rel=1e-5)


def test_two_devices_split_every_layers_work(tmp_path):
    """benchmarks/data_parallel_split.py in a 2-device process: in the compiled train step each device's
    convolutions over images (forward and input gradient) run on half the images one device's do. XLA's
    convolutions only: the event-driven ones run on the 2-device mesh alone in such a process (split likewise:
    tests/test_event_conv.py)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "data_parallel_split.py"), "--timesteps",
                          "4", "--out", str(tmp_path / "split")],
                         env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
                              "JSNN_EVENT_CONV": "0"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    one, two = json.loads((tmp_path / "split.json").read_text())["rows"]
    assert (one["devices"], two["devices"]) == (1, 2) and len(one["conv_batches"]) >= 5
    assert two["conv_batches"] == [b // 2 for b in one["conv_batches"]]


def dense_run(config, trainer, workdir, hooks=RunHooks()) -> Run:
    return Run(DensePlan(config), config, str(workdir), trainer=trainer,
               outputs=Outputs(plots=False, cost_report=False), hooks=hooks)


def test_interrupted_run_resumes_to_identical_results(small, tmp_path):
    config, trainer = small
    reference = dense_run(config, trainer, tmp_path / "straight").execute()

    workdir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):  # killed just after the checkpoint of epoch 2
        dense_run(config, trainer, workdir, hooks=crash_after_checkpoint(epoch=2)).execute()
    resumed = dense_run(config, trainer, workdir).execute()
    assert resumed["runs"][0]["test_accuracy"] == reference["runs"][0]["test_accuracy"]
    a, b = (load_ticket(os.path.join(w, "ticket.npz")).variables for w in (tmp_path / "straight", workdir))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    straight = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
    assert [r["test_accuracy"] for r in records] == [r["test_accuracy"] for r in straight]
    assert {"loss", "train_accuracy", "test_accuracy", "learning_rate", "sparsity", "images_per_sec"} <= set(records[0])


def test_periodic_checkpoints_at_most_every_checkpoint_min_seconds(small, monkeypatch):
    """An epoch's checkpoint is skipped while the last write (or the segment's start) is less than
    checkpoint_min_seconds old; the segment's last epoch always writes; 0 writes after every epoch."""
    import copy
    import dataclasses

    import jsnn.trainer

    config, trainer = small
    rule = MaskedTraining()
    now = [0.0]

    def clock():  # each reading 12 s after the one before
        now[0] += 12.0
        return now[0]

    def saved(min_seconds, epochs):
        run = copy.copy(trainer)  # its compiled steps shared
        run.config = dataclasses.replace(config, epochs=epochs, checkpoint_min_seconds=min_seconds)
        positions = []
        run.train_epochs(fresh_state(trainer), rule, 0, data_seed=0,  # the steps donate the state they take
                         save=lambda s, epoch, batch, partial: positions.append(epoch))
        return positions

    monkeypatch.setattr(jsnn.trainer, "_clock", clock)
    assert TrainConfig().checkpoint_min_seconds == 30.0
    # start 12; epoch ends at 24, 36 (younger than 30 s: skipped), 48 (written; the write read at 60),
    # 72, 84 (skipped), and the last epoch
    assert saved(30.0, 6) == [3, 6]
    assert saved(30.0, 2) == [2]
    assert saved(0.0, 3) == [1, 2, 3]
    # over several processes each takes process 0's decision, which it broadcasts (orbax's save is collective):
    # here process 0 finds no periodic write due, whatever this process's clock says
    decisions = []

    def process_0_says_no(due):
        decisions.append(bool(due))
        return np.asarray(False)

    monkeypatch.setattr(jsnn.trainer.jax, "process_count", lambda: 2)
    monkeypatch.setattr(jsnn.trainer.multihost_utils, "broadcast_one_to_all", process_0_says_no)
    assert saved(30.0, 6) == [6]
    assert decisions == [False, False, True, True, True]  # this process's own: due from the third epoch's end


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    config, trainer = small
    rule, sig = MaskedTraining(), dense_signature(config)
    workdir = str(tmp_path / "run")
    state = fresh_state(trainer)
    written = RunCheckpoints(trainer, workdir, sig)
    written.save(Position(0, 1), state, {}, {})
    written.wait()  # a save returns before its files are written
    poisoned = state.replace(weights=jax.tree.map(lambda w: w * jnp.nan, state.weights))
    with pytest.raises(TrainingDivergedError, match="last good checkpoint is kept"):
        trainer.train_epochs(poisoned, rule, 1, data_seed=0)
    assert RunCheckpoints(trainer, workdir, sig).restore(state)[2] == Position(0, 1)


def test_corrupt_or_foreign_checkpoint_is_a_clear_error_and_deletes_nothing(small, tmp_path):
    config, trainer = small
    sig = dense_signature(config)
    workdir = str(tmp_path / "run")
    state = fresh_state(trainer)
    written = RunCheckpoints(trainer, workdir, sig)
    written.save(Position(0, 1), state, {}, {})
    written.wait()  # a save returns before its files are written
    with pytest.raises(CheckpointError, match=r"different run \(model digits_cnn -> vgg16\)"):
        RunCheckpoints(trainer, workdir, {**sig, "model": "vgg16"}).restore(state)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(workdir) for f in fs)
    for f in files:  # damage every data file of the checkpoint
        if os.path.getsize(f) > 0 and "meta" not in f:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 3)
    with pytest.raises(CheckpointError, match="cannot be read|Nothing was deleted"):
        RunCheckpoints(trainer, workdir, sig).restore(state)
    assert sorted(os.path.join(d, f) for d, _, fs in os.walk(workdir) for f in fs) == files


def run_program(*args, timeout=120):
    return subprocess.run([sys.executable, *args], env={**ENV, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_missing_cifar_and_bad_flags_give_one_clear_line(tmp_path):
    """Three refused starts, started together (tests/programs.py)."""
    workdir = str(tmp_path / "w")
    missing, sparsity, prune_rate = run_together(
        [[sys.executable, "train/edge_popup.py", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"),
          "--workdir", workdir],
         [sys.executable, "train/edge_popup.py", "--sparsity", "1.5", "--workdir", workdir],
         [sys.executable, "train/imp.py", "--dataset", "digits", "--prune-rate", "0", "--workdir", workdir]],
        envs=[{**ENV, "JAX_PLATFORMS": "cpu"}] * 3, timeout=120, cwd=ROOT)
    assert missing.returncode == 1
    assert "--data-dir" in missing.stderr and "Traceback" not in missing.stderr
    assert sparsity.returncode == 2 and "sparsity must be" in sparsity.stderr and "Traceback" not in sparsity.stderr
    assert prune_rate.returncode == 2 and "--prune-rate" in prune_rate.stderr and "Traceback" not in prune_rate.stderr


def test_dense_program_writes_results_config_and_plots(tmp_path):
    workdir = tmp_path / "dense"
    out = run_program("train/dense.py", "--epochs", "1", "-T", "2", "--no-progress", "--no-cost-report",
                      "--workdir", str(workdir), timeout=300)  # the cost report is not under test here
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.load(open(workdir / "results.json"))
    assert results["runs"][0]["sparsity"] == 0.0 and 0.5 < results["runs"][0]["test_accuracy"] <= 1.0
    config = json.load(open(workdir / "config.json"))
    assert config["timesteps"] == 2 and config["model"] == "digits_cnn"
    assert (workdir / "training_curves.png").stat().st_size > 1000
    again = run_program("train/dense.py", "--epochs", "1", "-T", "2", "--no-progress", "--workdir", str(workdir))
    assert again.returncode == 0 and "already complete" in again.stdout


def test_cifar_tfds_path_trains_end_to_end_on_mock_data(tmp_path):
    """The CIFAR code path (tfds data_source -> on-device crop/flip -> jitted step) on tfds mock data."""
    import tensorflow_datasets as tfds

    from jsnn.runs.dense import train_dense

    config = TrainConfig(dataset="cifar10", model="digits_cnn", epochs=1, timesteps=2, batch_size=32,
                         progress=False).resolve("dense")
    with tfds.testing.mock_data(num_examples=64):
        entry = train_dense(config, str(tmp_path / "cifar"))
        dataset = load_dataset("cifar10")
    assert entry["sparsity"] == 0.0 and len(dataset.test_labels) == 64
    assert entry["test_accuracy"] == pytest.approx(ticket_accuracy(str(tmp_path / "cifar" / "ticket.npz"), dataset))
    records = [json.loads(line) for line in open(tmp_path / "cifar" / "metrics.jsonl")]
    assert len(records) == 1 and np.isfinite(records[0]["loss"])
