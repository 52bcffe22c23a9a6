"""One run over several processes on JAX's distributed runtime (gloo collectives on CPU): the same
numbers as one process with as many devices, two processes joined (the run records 2) with one
writer (process 1 leaves no file), and a run preempted at a batch count resumes exactly.

Process 1 runs under another umask than process 0 (0o020 instead of 0o022): anything it creates
in the workdir is world-writable, so a file or directory with that bit is its mark. (Files made
with mkstemp/mkdtemp get mode 0o600/0o700 from either process and carry no mark.)"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = ["train/dense.py", "--epochs", "2", "-T", "2", "--no-progress"]
UMASKS = (0o022, 0o020)  # process 0, processes >= 1: their files are 0o644 / 0o646, directories 0o755 / 0o757
STEPS_PER_EPOCH = 22  # digits: 1437 training images, batch 64, last batch dropped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_job_id() -> int:
    """A job id whose coordinator port (JAX: 61440 + id % 4096) is free here."""
    for _ in range(100):
        job = random.randrange(1, 10**6)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + job % 4096))
                return job
            except OSError:
                continue
    raise RuntimeError("no free port in JAX's SLURM range")


def launch(processes: int, devices_each: int, workdir: str, slurm: bool = False, flags=()) -> list[subprocess.Popen]:
    """``processes`` copies of the program: joined by JAX_* variables, or, with ``slurm``, by JAX's
    own detection of the variables a SLURM ``srun`` sets (one node). Process i runs under
    ``UMASKS[min(i, 1)]``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    if slurm:
        env.update(SLURM_JOB_ID=str(slurm_job_id()), SLURM_STEP_NODELIST="localhost", SLURM_NTASKS=str(processes))
        per_process = [{"SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)} for i in range(processes)]
    elif processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(processes))
        per_process = [{"JAX_PROCESS_ID": str(i)} for i in range(processes)]
    else:
        per_process = [{}]
    return [subprocess.Popen([sys.executable, *PROGRAM, *flags, "--workdir", workdir], cwd=ROOT, text=True,
                             env={**env, **mine}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda mask=UMASKS[min(i, 1)]: os.umask(mask))
            for i, mine in enumerate(per_process)]


def finish(procs, timeout=300) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


# gloo's C++ code prints "[Gloo] Rank i is connected to n peer ranks. Expected number of connected peer ranks
# is : n" itself, from its own threads, and the line sometimes arrives in pieces: split before "Expected" and
# before the peer count ("[Gloo] Rank 1 is connected to" / "3 peer ranks. Expected ..."), each piece holding one of
# these
GLOO_PIECES = ("[Gloo]", "peer ranks", "Expected number of connected")


def ours(stdout: str) -> list[str]:
    """The program's own lines, without gloo's."""
    return [line for line in stdout.splitlines() if line.strip() and not any(p in line for p in GLOO_PIECES)]


def marked_by_process_1(workdir) -> list[str]:
    """Every file and directory in ``workdir`` (itself included) that process 1 created."""
    paths = [workdir] + [os.path.join(d, n) for d, dirs, files in os.walk(workdir) for n in dirs + files]
    return [os.path.relpath(p, workdir) for p in paths if os.lstat(p).st_mode & 0o002]


def recorded_processes(workdir) -> tuple[int, int]:
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    return config["processes"], config["devices"]


def ticket(workdir) -> dict:
    with np.load(os.path.join(workdir, "ticket.npz")) as t:
        return {k: t[k] for k in t.files if k != "__meta__"}


def untimed(tree):
    """``tree`` without wall-clock entries (seconds), which no two runs share."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if "seconds" not in k}
    return tree


def results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)["runs"][0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same short dense run as 1 process x 4 devices and as 2 processes x 2 devices, the
    latter launched as a SLURM job step (JAX detects the processes from SLURM's variables). The
    two runs share no compiled program (4 devices against 2), so they run at the same time. Figures
    are not under test, nor is the one-process run's cost report (the two-process run keeps its
    own: the preempted run's results are compared with it whole)."""
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = str(base / "one"), str(base / "two")
    procs = (launch(1, 4, one, flags=("--no-plots", "--no-cost-report"))
             + launch(2, 2, two, slurm=True, flags=("--no-plots",)))
    done = finish(procs)
    return one, two, done


def test_two_processes_equal_one_process_with_as_many_devices(runs):
    one, two, done = runs
    for code, _, stderr in done:
        assert code == 0, stderr[-3000:]
    a, b = ticket(one), ticket(two)
    assert a.keys() == b.keys() and any(k.startswith("batch_stats/") for k in a)
    for k in a:  # weights, BN and running statistics after 44 steps
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    ra, rb = results(one), results(two)
    assert ra["test_accuracy"] == rb["test_accuracy"] and ra["sparsity"] == rb["sparsity"] == 0.0
    # weights agree to 1e-6, not bit for bit, and a spike that flips at the threshold moves one
    # test image's loss: 1 x 4 and 2 x 2 differed by 6e-5 (relative) here
    assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-4)
    # one writer: each epoch once in metrics.jsonl, log lines from process 0 only, no temporary files
    with open(os.path.join(two, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    out0, out1 = (ours(out) for _, out, _ in done[1:])
    out0 = "\n".join(out0)
    assert out0.count("epoch 2:") == 1 and "test accuracy" in out0 and out1 == []
    # two processes joined: the SLURM run wrote config.json and recorded 2 processes with 4 devices
    # (each process alone would record 1 and 2), and process 1 created nothing in the workdir
    assert recorded_processes(two) == (2, 4) and recorded_processes(one) == (1, 4)
    assert marked_by_process_1(two) == []
    with open(os.path.join(two, "results.json")) as f:
        assert len(json.load(f)["runs"]) == 1
    assert not [f for _, _, fs in os.walk(two) for f in fs if f.endswith(".tmp")]


def test_process_1_marks_are_seen(tmp_path):
    """The mark the tests above look for: what a process under process 1's umask creates."""
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    subprocess.run([sys.executable, "-c", "import os, sys; os.makedirs(os.path.join(sys.argv[1], 'd')); "
                    "open(os.path.join(sys.argv[1], 'f'), 'w').close()", workdir], check=True, timeout=120,
                   preexec_fn=lambda: os.umask(UMASKS[1]))
    assert sorted(marked_by_process_1(workdir)) == ["d", "f"]


def test_preempted_two_process_run_resumes_to_the_same_result(runs, tmp_path):
    """Preempted under a manual launch (JAX_* variables) once the checkpoint at epoch 2, batch 4 is
    written, resumed as a SLURM job step."""
    _, two, _ = runs
    workdir = str(tmp_path / "preempted")
    # a checkpoint every 2 steps: the step count to signal at, and each later step waits for a write,
    # so the signal lands well before the epoch ends
    quiet = ("--no-plots",)  # not under test here
    procs = launch(2, 2, workdir, flags=("--checkpoint-every-steps", "2", "--checkpoint-min-seconds", "0", *quiet))
    at = STEPS_PER_EPOCH + 4  # orbax's step number of that checkpoint; renamed into place once written

    def written() -> list[int]:
        found = os.listdir(os.path.join(workdir, "checkpoints")) if os.path.isdir(workdir + "/checkpoints") else []
        return [int(n) for n in found if n.isdigit() and int(n) >= at]

    deadline = time.time() + 240
    while not written():
        assert time.time() < deadline and all(p.poll() is None for p in procs), finish(procs)
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)  # only one process is told; both must stop at the same batch
    stopped = finish(procs)
    for code, _, stderr in stopped:
        assert code == 143, stderr[-3000:]
        assert "stopped by SIGTERM after epoch 2, batch" in stderr and "Traceback" not in stderr
    assert stopped[0][2].split("after ")[1] == stopped[1][2].split("after ")[1]
    batch = int(stopped[0][2].split("after epoch 2, batch ")[1].split()[0])
    assert 4 < batch < STEPS_PER_EPOCH
    assert recorded_processes(workdir) == (2, 4)
    resumed = finish(launch(2, 2, workdir, slurm=True, flags=quiet))  # resumed under JAX's cluster auto-detection
    for code, _, stderr in resumed:
        assert code == 0, stderr[-3000:]
    assert f"epoch 1/2, batch {batch}" in resumed[0][1] and "resuming from" in resumed[0][1]
    assert marked_by_process_1(workdir) == []
    a, b = ticket(two), ticket(workdir)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert untimed(results(workdir)) == untimed(results(two))
