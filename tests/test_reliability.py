"""Run integrity and preemption in one process: a workdir never mixes configurations, SIGTERM
mid-epoch (sent at a batch count) then rerun equals an uninterrupted run bit for bit, a second
signal during the save is harmless, and bad input is one line."""
import builtins
import dataclasses
import errno
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jsnn import preemption
from jsnn.config import FRAME_FIELDS, LIFSettings, TrainConfig
from jsnn.metrics import log
from jsnn.models import build_model
from jsnn.runs import imp
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.segment import Position, RunCheckpoints, describe, train_segment
from jsnn.runs.workdir import METRICS, RunMismatchError, claim_workdir, drop_metrics_after, run_signature
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables
from tests.programs import run_together
from tests.small_data import digits_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def small():
    """Dense digits on 320 training images, batch 32 (10 steps per epoch), T = 2, 2 epochs."""
    ds = digits_subset(320, 64)
    config = TrainConfig(dataset="digits", epochs=2, timesteps=2, batch_size=32, progress=False).resolve("dense")
    return config, Trainer(config, build_model(config, ds.num_classes), ds)


def fresh_state(trainer, seed=0):
    variables = init_variables(trainer.model, jax.random.key(seed), (1, 8, 8, 1))
    return trainer.new_state(variables, {}, MaskedTraining(), seed)


def host(tree):
    return jax.tree.map(np.asarray, tree)


def metrics(path):
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_sec")} for line in f]


@pytest.fixture(autouse=True)
def no_stale_stop_request():
    preemption.clear()
    yield
    preemption.clear()


def train_resumable(trainer, workdir, state, rule, sig, on_batch=None, checkpoints=None):
    """One segment in ``workdir``, resumed from its newest checkpoint (what a dense run does)."""
    checkpoints = checkpoints or RunCheckpoints(trainer, workdir, sig)
    start, partial = Position(), None
    resumed = checkpoints.restore(state)
    if resumed is not None:
        state, _, start, meta = resumed
        partial = meta.get("partial_epoch")
        log(f"resuming from {checkpoints.directory} at {describe(start, trainer.config.epochs)}")
    path = os.path.join(workdir, METRICS)
    drop_metrics_after(path, lambda r: r["epoch"] <= start.epoch)
    return train_segment(trainer, checkpoints, state, rule, start, partial_epoch=partial, metrics_path=path,
                         on_batch=on_batch)


def signal_after(epoch: int, batches: int, signum=signal.SIGTERM):
    """An ``on_batch`` that sends ``signum`` to this process once ``batches`` steps of ``epoch``
    (counted from 0) are done; records every (epoch, batches done) it sees."""
    seen = []

    def on_batch(e, done):
        seen.append((e, done))
        if (e, done) == (epoch, batches):
            os.kill(os.getpid(), signum)

    on_batch.seen = seen
    return on_batch


def test_sigterm_mid_epoch_then_rerun_is_bit_identical(small, tmp_path):
    config, trainer = small
    rule, sig = MaskedTraining(), run_signature("dense", config)
    reference = host(train_resumable(trainer, str(tmp_path / "straight"), fresh_state(trainer), rule, sig))

    workdir = str(tmp_path / "preempted")
    hook = signal_after(1, 3)  # after epoch 2's third step: the next step carries the flag, read one step later
    with preemption.stop_on_signals(), pytest.raises(preemption.Preempted, match="SIGTERM after epoch 2, batch 5"):
        train_resumable(trainer, workdir, fresh_state(trainer), rule, sig, on_batch=hook)
    assert hook.seen == [(0, b) for b in range(1, 11)] + [(1, b) for b in range(1, 6)]
    _, _, position, meta = RunCheckpoints(trainer, workdir, sig).restore(fresh_state(trainer))
    assert position == Position(0, 1, 5) and len(meta["partial_epoch"]["loss"]) == 5

    preemption.clear()
    rest = []
    resumed = host(train_resumable(trainer, workdir, fresh_state(trainer, seed=1), rule, sig,
                                   on_batch=lambda e, b: rest.append((e, b))))
    assert rest == [(1, b) for b in range(6, 11)]  # the rerun starts at the batch after the checkpoint
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(resumed)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert metrics(os.path.join(workdir, "metrics.jsonl")) == metrics(str(tmp_path / "straight" / "metrics.jsonl"))


def test_checkpoints_written_in_the_background_resume_bit_identical(small, tmp_path):
    """The accelerators' default, exercised on the CPU: every checkpoint written in the background while the next
    epoch trains. SIGTERM mid-epoch still leaves the stop's checkpoint complete on disk when ``Preempted`` is
    raised, and the rerun (in the background too) ends bit-identical to an uninterrupted run."""
    config, trainer = small
    rule, sig = MaskedTraining(), run_signature("dense", config)
    reference = host(train_resumable(trainer, str(tmp_path / "straight"), fresh_state(trainer), rule, sig))
    workdir = str(tmp_path / "background")
    with preemption.stop_on_signals(), pytest.raises(preemption.Preempted, match="SIGTERM after epoch 2, batch 5"):
        train_resumable(trainer, workdir, fresh_state(trainer), rule, sig, on_batch=signal_after(1, 3),
                        checkpoints=RunCheckpoints(trainer, workdir, sig, background=True))
    _, _, position, _ = RunCheckpoints(trainer, workdir, sig, background=False).restore(fresh_state(trainer))
    assert position == Position(0, 1, 5)  # read by another instance: the write was finished before the raise
    preemption.clear()
    resumed = host(train_resumable(trainer, workdir, fresh_state(trainer, seed=1), rule, sig,
                                   checkpoints=RunCheckpoints(trainer, workdir, sig, background=True)))
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(resumed)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert metrics(os.path.join(workdir, "metrics.jsonl")) == metrics(str(tmp_path / "straight" / "metrics.jsonl"))


class SignalledDuringSave(RunCheckpoints):
    """Checkpoints whose writes are interrupted by a second SIGTERM."""

    def save(self, position, state, extra, info):
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal arrives in the middle of the write
        super().save(position, state, extra, info)


def test_second_signal_during_the_save_does_not_corrupt_it(small, tmp_path, capsys):
    config, trainer = small
    rule, sig = MaskedTraining(), run_signature("dense", config)
    workdir = str(tmp_path / "twice")
    with preemption.stop_on_signals(), pytest.raises(preemption.Preempted, match="after epoch 1, batch 4"):
        train_resumable(trainer, workdir, fresh_state(trainer), rule, sig, on_batch=signal_after(0, 2),
                        checkpoints=SignalledDuringSave(trainer, workdir, sig))
    assert "already stopping" in capsys.readouterr().err
    state, _, position, _ = RunCheckpoints(trainer, workdir, sig).restore(fresh_state(trainer))
    assert position == Position(0, 0, 4)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host(state.weights)))


def test_resume_with_another_setting_names_it_and_changes_nothing(small, tmp_path):
    config, trainer = small
    workdir = str(tmp_path / "run")
    claim_workdir(workdir, run_signature("dense", config), {})
    before = open(os.path.join(workdir, "config.json")).read()
    other = dataclasses.replace(config, lr=0.01, timesteps=3, progress=True, eval_every=2)
    with pytest.raises(RunMismatchError) as e:
        claim_workdir(workdir, run_signature("dense", other), {})
    assert "lr 0.1 -> 0.01" in str(e.value) and "timesteps 2 -> 3" in str(e.value)
    assert "progress" not in str(e.value) and "eval_every" not in str(e.value)  # run control is not a setting
    assert open(os.path.join(workdir, "config.json")).read() == before
    # every TrainConfig field that can change results is in the signature
    settings = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "lif"} | {
        f.name for f in dataclasses.fields(LIFSettings)}  # the neuron's settings nested in TrainConfig.lif
    run_control = {"data_dir", "checkpoint_every", "checkpoint_every_steps", "checkpoint_min_seconds",
                   "keep_checkpoints", "eval_every", "progress"}
    # the event-frame settings (and the frames they resolve to) only where the data are events: an
    # image run's signature, and so its workdir files, are as before they existed
    # the precision only where it is not f32: an f32 run's signature is as before --precision existed
    assert set(run_signature("dense", config)) == settings - run_control - set(FRAME_FIELDS) - {"precision"} | {
        "method"}
    assert run_signature("dense", dataclasses.replace(config, precision="bf16"))["precision"] == "bf16"
    events = TrainConfig(dataset="digits_dvs", epochs=2, timesteps=2, batch_size=32, progress=False).resolve("dense")
    assert set(run_signature("dense", events)) == settings - run_control - {"precision"} | {"method", "frames"}


def run_program(*args, timeout=300):
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_second_start_of_a_running_run_is_refused_in_one_line(tmp_path):
    """The same command twice on one workdir: the second stops at once, naming the first (host,
    pid); the first trains on, and its lock goes when it stops (here on SIGTERM). While the second
    starts, the first is paused (SIGSTOP), so it does not take a core from it: on one host a lock is
    held while its pid runs (jsnn/runs/lock.py), paused or not."""
    workdir = str(tmp_path / "w")
    command = [sys.executable, "train/dense.py", "--epochs", "20", "-T", "2", "--no-progress", "--workdir", workdir]
    first = subprocess.Popen(command, env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lock, metrics = os.path.join(workdir, "run.lock"), os.path.join(workdir, "metrics.jsonl")
        deadline = time.time() + 240
        while not (os.path.exists(lock) and os.path.exists(metrics)):  # claimed, and an epoch trained
            if time.time() > deadline or first.poll() is not None:
                first.kill()
                pytest.fail(first.communicate(timeout=60)[1][-3000:])
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.Popen(command, env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            _, line = second.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            second.kill()
            second.communicate(timeout=60)
            pytest.fail("the second start was not refused: it trains into the same workdir")
        line = line.strip()
        assert second.returncode == 2 and "\n" not in line and "Traceback" not in line, line[-3000:]
        assert f"host {socket.gethostname()}, pid {first.pid}" in line and "--workdir" in line
        assert first.poll() is None  # the first trains on
    finally:
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143 and "stopped by SIGTERM" in stderr, stderr[-3000:]
    assert not os.path.exists(lock)  # released on its way out


def test_finished_run_with_other_settings_is_refused_and_untouched(tmp_path):
    workdir = str(tmp_path / "ep")
    first = run_program("train/edge_popup.py", "--epochs", "1", "-T", "2", "--no-progress", "--no-plots",
                        "--no-cost-report", "--workdir", workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    files = {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, fs in os.walk(workdir) for f in fs}
    again = run_program("train/edge_popup.py", "--epochs", "2", "--lr", "0.01", "-T", "2", "--no-progress",
                        "--workdir", workdir)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    line = again.stderr.strip()
    assert line.count("\n") == 0 and "epochs 1 -> 2" in line and "lr 0.3 -> 0.01" in line
    assert "already complete" not in again.stdout
    after = {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, fs in os.walk(workdir) for f in fs}
    assert after == files
    # the same command again is still "already complete", and a dense baseline of another architecture is refused
    same = run_program("train/edge_popup.py", "--epochs", "1", "-T", "2", "--no-progress", "--no-plots",
                        "--no-cost-report", "--workdir", workdir)
    assert same.returncode == 0 and "already complete" in same.stdout
    dense = tmp_path / "dense"
    os.makedirs(dense)
    with open(dense / "results.json", "w") as f:
        json.dump({"method": "dense", "runs": [{"test_accuracy": 0.9}]}, f)
    with open(dense / "config.json", "w") as f:
        json.dump({"signature": {**json.load(open(os.path.join(workdir, "config.json")))["signature"],
                                 "timesteps": 4}}, f)
    out = run_program("train/edge_popup.py", "--epochs", "1", "-T", "2", "--no-progress", "--workdir", workdir,
                      "--dense-baseline", str(dense))
    assert out.returncode == 2 and "timesteps 4 -> 2" in out.stderr and "Traceback" not in out.stderr


def test_bad_inputs_are_one_line(tmp_path):
    """Five refused starts, started together (tests/programs.py)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    bad_flags = ((["--threshold", "-1"], "--threshold (V_th) must be > 0"),
                 (["--checkpoint-every-steps", "-2"], "--checkpoint-every-steps must be >= 0"),
                 (["--momentum", "1.5"], "--momentum must lie in [0, 1)"))
    dense = [sys.executable, "train/dense.py"]
    commands = [dense + ["--epochs", "1", "--workdir", str(a_file)]]
    commands += [dense + [*flags, "--workdir", str(tmp_path / "w")] for flags, _ in bad_flags]
    envs = [ENV] * len(commands)
    env = {k: v for k, v in ENV.items() if not k.startswith("JAX_")}
    commands.append(dense + ["--workdir", str(tmp_path / "v")])
    envs.append({**env, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"})
    outs = run_together(commands, envs=envs, timeout=120, cwd=ROOT)
    out = outs[0]
    assert out.returncode == 2 and "is a file, not a directory" in out.stderr and "Traceback" not in out.stderr
    assert a_file.read_text() == "keep me"
    for (_, words), out in zip(bad_flags, outs[1:4], strict=True):
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not os.path.exists(tmp_path / "w")
    out = outs[4]
    assert out.returncode == 2 and "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set" in out.stderr


def test_metrics_line_cut_short_is_dropped_on_resume(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w") as f:
        f.write('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')  # the disk filled in the middle of a line
    drop_metrics_after(path, lambda r: r["epoch"] <= 1)
    assert open(path).read() == '{"epoch": 1, "loss": 0.5}\n'


def program_flags():
    """train/flags.py, the programs' shared start-up and exit (``run_cleanly``), imported as they import it (with
    train/ on the path, as a program's own folder is: flags imports its neighbour ``starting``)."""
    if os.path.join(ROOT, "train") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "train"))
    spec = importlib.util.spec_from_file_location("train_flags_for_tests", os.path.join(ROOT, "train", "flags.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(workdir: str) -> dict:
    """Every file under ``workdir`` (but the lock) and its bytes."""
    found = {}
    for d, _, fs in os.walk(workdir):
        for f in fs:
            if f != "run.lock":
                with open(os.path.join(d, f), "rb") as fh:
                    found[os.path.relpath(os.path.join(d, f), workdir)] = fh.read()
    return found


def test_full_disk_keeps_what_was_saved_and_says_so_in_one_line(digits_imp, tmp_path, monkeypatch, capsys):
    """An IMP run whose disk fills as it writes round 1's ticket: every file write under the workdir
    from then on creates its file and fails with ENOSPC. The program's exit (``run_cleanly``) prints
    one line and exits 1; every file saved before is there, byte for byte; the rerun, with space
    again, goes on from round 1 (round 0 is not trained again) and ends with both rounds."""
    flags = program_flags()
    _, config, _, trainer = digits_imp
    options = imp.IMPOptions(rounds=2).resolve(config)
    workdir = str(tmp_path / "w")
    before_full = {}
    real_open = builtins.open

    def on_phase(name, where):
        if name == "ticket" and where.get("segment") == 1 and not before_full:
            before_full.update(snapshot(workdir))

    def full_disk_open(file, mode="r", *args, **kwargs):
        if before_full and any(c in mode for c in "wax") and os.path.abspath(str(file)).startswith(workdir):
            real_open(file, mode, *args, **kwargs).close()  # the file is made, its bytes do not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    def run(hooks):
        return imp.run(config, options, workdir, trainer=trainer, outputs=Outputs(plots=False, cost_report=False),
                       hooks=hooks)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit) as exited:
            flags.run_cleanly(lambda: run(RunHooks(on_phase)))
    finally:  # run_cleanly leaves the signals ignored (the process is about to exit): not this one
        for s, h in handlers.items():
            signal.signal(s, h)
    monkeypatch.setattr(builtins, "open", real_open)
    assert exited.value.code == 1 and before_full
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot write ") and "No space left on device" in lines[0]
    assert "rerun the same command to resume" in lines[0]
    after = snapshot(workdir)
    assert {k: after.get(k) for k in before_full} == before_full  # nothing saved before is lost or changed
    saved_round_0 = json.loads(before_full["results.json"])["runs"]
    assert [r["round"] for r in saved_round_0] == [0]

    trained = []
    results = run(RunHooks(lambda name, where: trained.append(where.get("segment")) if name == "train" else None))
    assert set(trained) == {1}  # round 0 was kept, only round 1 trained again
    assert [r["round"] for r in results["runs"]] == [0, 1] and results["runs"][0] == saved_round_0[0]
    assert os.path.exists(os.path.join(workdir, "tickets", "round_01.npz"))


WRITE_FAILS_IN_BACKGROUND = r"""
import logging, resource, signal, sys
import numpy as np
from jsnn.checkpoint import Checkpointer, CheckpointError

directory, how = sys.argv[1], sys.argv[2]
absl = logging.getLogger("absl")
absl.setLevel(logging.WARNING)
ckpt = Checkpointer(directory, background=True)
first = {"w": np.arange(1000, dtype=np.float32)}
ckpt.save(1, first, {"n": 1})
ckpt.wait()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # step 2's random array does not fit, compressed or not
ckpt.save(2, {"w": np.random.default_rng(0).random(100_000, np.float32)}, {"n": 2})  # returns before writing
try:
    if how == "wait":
        ckpt.wait()
    else:  # the next save finishes the one in flight first
        ckpt.save(3, first, {"n": 3})
    print("no error")
except CheckpointError as e:
    print("error:", e)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print("absl level", absl.level)
print("latest", ckpt.latest_step())
tree, meta = Checkpointer(directory).restore(first, {})
print("restored", meta["n"], bool(np.array_equal(tree["w"], first["w"])))
"""


@pytest.mark.parametrize("how", ["wait", "next save"])
def test_a_write_that_fails_in_the_background_is_one_error_and_keeps_the_last_checkpoint(tmp_path, how):
    """Saves in the background (an accelerator's default) return before orbax has written the files. A write that fails
    there (the file size limit, as a full disk would) is raised at the next wait or save as one
    CheckpointError naming its checkpoint, prints nothing else, leaves absl's log level as it was, and the
    checkpoint written before is the newest one and reads back."""
    out = subprocess.run([sys.executable, "-c", WRITE_FAILS_IN_BACKGROUND, str(tmp_path / "c"), how], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"error: could not write the checkpoint {tmp_path / 'c' / '2'} ("), lines
    assert "The checkpoints written before are kept" in lines[0]
    assert lines[1:] == ["absl level 30", "latest 1", "restored 1 True"]
    assert out.stderr == ""
