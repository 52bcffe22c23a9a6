"""One run over several processes on JAX's distributed runtime (gloo collectives on CPU): the same
numbers as one process with as many devices, one writer, and a preempted run resumes exactly."""
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


def launch(processes: int, devices_each: int, workdir: str, slurm: bool = False) -> list[subprocess.Popen]:
    """``processes`` copies of the program: joined by JAX_* variables, or, with ``slurm``, by JAX's
    own detection of the variables a SLURM ``srun`` sets (one node)."""
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
    return [subprocess.Popen([sys.executable, *PROGRAM, "--workdir", workdir], cwd=ROOT, text=True,
                             env={**env, **mine}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for mine in per_process]


def finish(procs, timeout=300) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def ours(stdout: str) -> list[str]:
    """The program's own lines (gloo's C++ code prints '[Gloo] Rank i is connected ...' itself)."""
    return [l for l in stdout.splitlines() if l.strip() and not l.startswith("[Gloo]")]


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
    """The same short dense run as 1 process x 4 devices and as 2 processes x 2 devices."""
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = str(base / "one"), str(base / "two")
    done = finish(launch(1, 4, one)) + finish(launch(2, 2, two))
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
    assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-6)
    # one writer: each epoch once in metrics.jsonl, log lines from process 0 only, no temporary files
    with open(os.path.join(two, "metrics.jsonl")) as f:
        assert [json.loads(l)["epoch"] for l in f] == [1, 2]
    out0, out1 = (ours(out) for _, out, _ in done[1:])
    out0 = "\n".join(out0)
    assert out0.count("epoch 2:") == 1 and "test accuracy" in out0 and out1 == []
    with open(os.path.join(two, "config.json")) as f:
        config = json.load(f)
    assert config["processes"] == 2 and config["devices"] == 4
    assert not [f for _, _, fs in os.walk(two) for f in fs if f.endswith(".tmp")]


def test_preempted_two_process_run_resumes_to_the_same_result(runs, tmp_path):
    """Preempted under a manual launch (JAX_* variables), resumed as a SLURM job step."""
    _, two, _ = runs
    workdir = str(tmp_path / "preempted")
    procs = launch(2, 2, workdir)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and open(metrics).read().count("\n") >= 1):
        assert time.time() < deadline and all(p.poll() is None for p in procs), finish(procs)
        time.sleep(0.05)
    time.sleep(0.3)
    procs[1].send_signal(signal.SIGTERM)  # only one process is told; both must stop at the same batch
    stopped = finish(procs)
    for code, _, stderr in stopped:
        assert code == 143, stderr[-3000:]
        assert "stopped by SIGTERM after epoch 2, batch" in stderr and "Traceback" not in stderr
    assert stopped[0][2].split("after ")[1] == stopped[1][2].split("after ")[1]
    resumed = finish(launch(2, 2, workdir, slurm=True))  # resumed under JAX's cluster auto-detection
    for code, _, stderr in resumed:
        assert code == 0, stderr[-3000:]
    assert "resuming from" in resumed[0][1] and "epoch 1/2, batch" in resumed[0][1]
    a, b = ticket(two), ticket(workdir)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert untimed(results(workdir)) == untimed(results(two))
