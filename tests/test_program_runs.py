"""The programs run to their end on tiny digits settings, started together (tests/programs.py), and
the end of a run lies inside the signal guard (jsnn/preemption.py ``stop_on_signals(until_exit=True)``).

- ``train/imp.py`` (2 rounds of 1 epoch) is sent SIGTERM as soon as it prints the last round's result
  line and again every 5 ms until it exits: every one of them lands in the run's last writes, its
  exit or the interpreter's shutdown. The run must finish (exit 0, one line saying the signal came
  too late to stop anything, or none when every signal came after the guard ended and was ignored)
  with every round's results and tickets, never be killed without a word (before: exit -15, nothing said).
- ``train/imp.py`` sent SIGINT (Ctrl-C) after its first epoch stops with one line and exit 130.
- ``train/dense.py`` sent SIGTERM or SIGINT while it still imports JAX and jsnn stops with one line
  (train/starting.py), exit 128 + signal, its workdir not created.
- ``train/sparse_training.py --algorithm set`` (with its cost report) and ``train/theory.py slth`` run to
  their end. (``theory.py`` with all three experiments costs about 35 s of CPU even at its smallest
  settings, so only slth runs here; crisis and flips are tested through their library functions in
  tests/test_theory.py, their experiment drivers are not run to the end by any test.)

What the programs write is checked against counts made here from the files: the tickets' masks
against the sparsity in results.json, the printed accuracies against results.json and against the
360 test images (a fraction of them).
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.programs import run_together

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"}
TINY = ["--dataset", "digits", "-T", "2", "--width", "0.25", "--epochs", "1", "--no-progress"]
TEST_IMAGES = 360  # digits' test split


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("programs")
    dirs = {name: str(root / name) for name in ("imp", "interrupted", "set", "theory")}
    commands = {
        "imp": [sys.executable, "train/imp.py", "--rounds", "2", *TINY, "--no-cost-report", "--workdir", dirs["imp"]],
        "interrupted": [sys.executable, "train/imp.py", "--rounds", "2", *TINY, "--epochs", "2",
                        "--no-plots", "--no-cost-report", "--workdir", dirs["interrupted"]],
        "set": [sys.executable, "train/sparse_training.py", "--algorithm", "set", "--sparsity", "0.8", *TINY,
                "--no-plots", "--workdir", dirs["set"]],
        "theory": [sys.executable, "train/theory.py", "slth", "--workdir", dirs["theory"], "--per_block", "16",
                   "--slth_eps", "0.02", "--trials", "1", "--max_inputs", "256"],
    }
    signals = {"imp": ("round 1:", signal.SIGTERM, 0.005), "interrupted": ("round 0 epoch 1:", signal.SIGINT, None)}
    names = list(commands)
    done = run_together([commands[n] for n in names], envs=[ENV] * len(names), timeout=400, cwd=ROOT,
                        signals=[signals.get(n) for n in names])
    return {n: (out, dirs[n]) for n, out in zip(names, done)}


def masks_sparsity(ticket_path: str) -> float:
    """The fraction of zeros over every mask of a ticket file, counted here."""
    with np.load(ticket_path) as z:
        masks = [z[k] for k in z.files if k.startswith("masks/")]
    assert masks, ticket_path
    return 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / sum(m.size for m in masks)


def printed_accuracies(stdout: str, prefix: str) -> list[float]:
    return [float(line.rsplit("test accuracy ", 1)[1].split()[0]) for line in stdout.splitlines()
            if line.startswith(prefix) and "test accuracy" in line]


def test_sigterm_after_the_last_result_line_lets_the_run_finish(runs):
    out, workdir = runs["imp"]
    assert out.returncode == 0, out.stderr[-3000:]
    # a signal that came inside the guard is said in one line (repeats as "again"); one after it is ignored
    said = [line for line in out.stderr.splitlines() if not line.startswith("SIGTERM again: ")]
    assert said in ([], ["SIGTERM came after the last training step: the run finished and is complete"]), out.stderr
    results = json.load(open(os.path.join(workdir, "results.json")))["runs"]
    assert [r["round"] for r in results] == [0, 1]
    assert [r["sparsity"] for r in results] == pytest.approx([0.0, 0.25], abs=1e-3)
    for r in results:  # each round's ticket holds the sparsity its result reports
        assert masks_sparsity(os.path.join(workdir, "tickets", f"round_{r['round']:02d}.npz")) == pytest.approx(
            r["sparsity"], abs=1e-6)
        assert r["test_accuracy"] * TEST_IMAGES == pytest.approx(round(r["test_accuracy"] * TEST_IMAGES), abs=1e-6)
    accuracies = [r["test_accuracy"] for r in results]
    assert printed_accuracies(out.stdout, "round ") == pytest.approx(accuracies, abs=5e-5)
    assert accuracies[-1] > 0.5  # an epoch on digits: well above chance (0.1)
    assert os.path.getsize(os.path.join(workdir, "accuracy_vs_sparsity.png")) > 1000


def test_sigint_stops_the_run_with_one_line_and_exit_130(runs):
    out, workdir = runs["interrupted"]
    assert out.returncode == 130, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT after round 0 epoch 2"), out.stderr[-3000:]
    assert "rerun the same command" in lines[0]
    assert not os.path.exists(os.path.join(workdir, "results.json"))  # it stopped inside round 0's training
    assert glob.glob(os.path.join(workdir, "checkpoints", "*"))


def test_sparse_training_program_runs_to_the_end(runs):
    out, workdir = runs["set"]
    assert out.returncode == 0 and out.stderr == "", out.stderr[-3000:]
    (entry,) = json.load(open(os.path.join(workdir, "results.json")))["runs"]
    assert entry["algorithm"] == "set" and entry["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert masks_sparsity(os.path.join(workdir, "ticket.npz")) == pytest.approx(entry["sparsity"], abs=1e-6)
    acc = entry["test_accuracy"]
    assert acc * TEST_IMAGES == pytest.approx(round(acc * TEST_IMAGES), abs=1e-6)
    assert printed_accuracies(out.stdout, "SET (erk) on digits") == pytest.approx([acc], abs=5e-5)


def test_theory_program_runs_to_the_end(runs):
    out, workdir = runs["theory"]
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.load(open(os.path.join(workdir, "slth.json")))
    assert res["trials"] == 1
    assert os.path.getsize(os.path.join(workdir, "slth.png")) > 1000
    assert f"slth: {res['seconds']:.1f}s -> {workdir}/slth.json, slth.png" in out.stdout


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` now (Linux: the SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal mask from Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_program_imports_stops_it_with_one_line(tmp_path, signum):
    """A signal that lands while the program is still importing JAX and jsnn (train/starting.py): one
    line, exit 128 + signal, nothing written. It is sent as soon as the program catches SIGTERM, which
    train/starting.py sets up before the imports that take seconds (before it, SIGTERM killed the
    program without a word, exit -15)."""
    workdir = tmp_path / "w"
    program = subprocess.Popen([sys.executable, "train/dense.py", "--workdir", str(workdir)], cwd=ROOT, env=ENV,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not _catches(program.pid, signal.SIGTERM):
        assert time.time() < deadline and program.poll() is None, program.communicate(timeout=60)
        time.sleep(0.002)
    program.send_signal(signum)
    stdout, stderr = program.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert program.returncode == 128 + signum, (program.returncode, stderr[-3000:])
    assert stderr == f"stopped by {name} while starting, before anything was written: rerun the same command\n"
    assert stdout == "" and not workdir.exists()
