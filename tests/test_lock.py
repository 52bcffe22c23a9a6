"""One run per workdir (jsnn/runs/lock.py): a second run is refused with one line naming the
holder; a killed run's lock is taken over (at once on its host, after its heartbeat stops from
another host); the processes of one multi-process run share it; it goes away when its run ends."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from jsnn.runs import lock as jlock
from jsnn.runs.lock import LOCK_NAME, WorkdirBusyError, WorkdirLock, hold_workdir, release_workdir, run_identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = os.path.join(ROOT, "tests", "scripts", "lock_holder.py")


def write_lock(workdir, **fields) -> str:
    """A lock file as another run would have left it: this machine's identity unless overridden."""
    os.makedirs(workdir, exist_ok=True)
    record = {**jlock._machine(), "pid": os.getppid(), "pid_start": jlock._process_start(os.getppid()),
              "run_id": None, "token": "theirs", "started": "2030-01-01T00:00:00+00:00", **fields}
    path = os.path.join(workdir, LOCK_NAME)
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def holder(workdir) -> dict:
    with open(os.path.join(workdir, LOCK_NAME)) as f:
        return json.load(f)


def files(workdir) -> set:
    return set(os.listdir(workdir))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    return p.pid


def test_second_holder_is_refused_with_host_and_pid(tmp_path):
    workdir = str(tmp_path / "w")
    write_lock(workdir)  # held by a live process of this machine (our parent)
    before = open(os.path.join(workdir, LOCK_NAME)).read()
    with pytest.raises(WorkdirBusyError) as e:
        WorkdirLock(workdir).acquire()
    line = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in line
    assert f"host {socket.gethostname()}, pid {os.getppid()}" in line and "pass another --workdir" in line
    assert open(os.path.join(workdir, LOCK_NAME)).read() == before  # nothing changed
    assert files(workdir) == {LOCK_NAME}


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, capsys):
    workdir = str(tmp_path / "w")
    write_lock(workdir, pid=dead_pid(), pid_start=None)
    lock = WorkdirLock(workdir).acquire()
    try:
        assert holder(workdir)["pid"] == os.getpid() and holder(workdir)["token"] == lock.token
        assert "taking over the lock of a run that is gone" in capsys.readouterr().err
    finally:
        lock.release()
    assert files(workdir) == set()


def test_reused_pid_does_not_keep_a_lock(tmp_path):
    """The pid runs, but it is a process started after the lock's holder (pids are reused)."""
    workdir = str(tmp_path / "w")
    write_lock(workdir, pid_start="1")
    with WorkdirLock(workdir):
        assert holder(workdir)["pid"] == os.getpid()


def test_other_host_lock_is_taken_over_only_once_its_heartbeat_is_old(tmp_path):
    workdir = str(tmp_path / "w")
    path = write_lock(workdir, host="elsewhere", boot_id="x", pid=os.getpid())  # our pid, on another machine
    with pytest.raises(WorkdirBusyError, match="host elsewhere, pid"):
        WorkdirLock(workdir, stale_after=60).acquire()  # touched just now: its run may be alive
    old = time.time() - 120
    os.utime(path, (old, old))
    with pytest.raises(WorkdirBusyError, match=r"last heartbeat \d+ s ago") as err:
        WorkdirLock(workdir, stale_after=300).acquire()
    age = int(re.search(r"last heartbeat (\d+) s ago", str(err.value)).group(1))
    assert 119 <= age <= time.time() - old + 1  # the file's age, however long the machine took to get here
    with WorkdirLock(workdir, stale_after=60):
        assert holder(workdir)["host"] == socket.gethostname()
    assert files(workdir) == set()


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    """The heartbeat touches the lock again after it was made old (at most 120 s of waiting, a guard
    against a hang only: the heartbeat runs every 0.05 s)."""
    workdir = str(tmp_path / "w")
    with WorkdirLock(workdir, heartbeat=0.05):
        path = os.path.join(workdir, LOCK_NAME)
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 120
        while os.stat(path).st_mtime == old:
            assert time.monotonic() < deadline, "the heartbeat never touched the lock"
            time.sleep(0.01)
        assert os.stat(path).st_mtime > old + 999  # touched now, not some other time


def test_processes_of_one_run_share_the_lock_and_only_process_0_writes(tmp_path):
    workdir = str(tmp_path / "w")
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}
    ids = [run_identity(i, 2, slurm) for i in range(2)]
    assert ids[0]["run_id"] == ids[1]["run_id"] == "slurm:4242.0" and [i["process_index"] for i in ids] == [0, 1]
    assert run_identity(0, 1, slurm)["run_id"] is None  # one process: nothing to share
    jax_ids = [run_identity(i, 2, {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) for i in range(2)]
    assert jax_ids[0]["run_id"] == jax_ids[1]["run_id"] == "jax:10.0.0.1:1234/2"
    with pytest.raises(ValueError, match="set JSNN_RUN_ID"):
        run_identity(1, 2, {})
    assert run_identity(1, 2, {"JSNN_RUN_ID": "x", **slurm})["run_id"] == "user:x"
    assert run_identity(1, 2, {"OMPI_MCA_orte_hnp_uri": "12@tcp://h:1"})["run_id"] == "ompi:12@tcp://h:1"

    primary = WorkdirLock(workdir, **ids[0]).acquire()
    before = (files(workdir), open(os.path.join(workdir, LOCK_NAME)).read())
    member = WorkdirLock(workdir, **ids[1], member_wait=1).acquire()
    assert member.held and not member.token
    member.release()
    assert (files(workdir), open(os.path.join(workdir, LOCK_NAME)).read()) == before  # process 1 wrote nothing
    # a process of another run is refused, naming the holder
    with pytest.raises(WorkdirBusyError, match=f"pid {os.getpid()}, run slurm:4242.0"):
        WorkdirLock(workdir, **run_identity(1, 2, {"SLURM_JOB_ID": "7"}), member_wait=0.2).acquire()
    primary.release()
    assert files(workdir) == set()


def test_member_waits_for_process_0(tmp_path):
    """Process 1 may look before process 0 took the lock: it waits, then joins."""
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    ident = run_identity(1, 2, {"JAX_COORDINATOR_ADDRESS": "h:1"})
    write_lock(workdir, run_id="jax:h:1/2", pid=dead_pid(), pid_start=None)  # a requeued run's old lock
    assert WorkdirLock(workdir, **ident, member_wait=0.5).acquire().member
    os.remove(os.path.join(workdir, LOCK_NAME))
    with pytest.raises(WorkdirBusyError, match="process 0 of run jax:h:1/2 did not take"):
        WorkdirLock(workdir, **ident, member_wait=0.2).acquire()
    # process 0 of the requeued run replaces its old incarnation's lock, even if that pid runs
    write_lock(workdir, run_id="jax:h:1/2")
    with WorkdirLock(workdir, **run_identity(0, 2, {"JAX_COORDINATOR_ADDRESS": "h:1"})):
        assert holder(workdir)["pid"] == os.getpid()


def test_same_process_keeps_its_lock_and_release_is_idempotent(tmp_path):
    workdir = str(tmp_path / "w")
    first = hold_workdir(workdir)
    assert hold_workdir(workdir) is first  # a nested claim in one process is the same lock
    release_workdir(workdir)
    assert holder(workdir)["token"] == first.token  # still held by the outer claim
    release_workdir(workdir)
    assert files(workdir) == set()
    release_workdir(workdir)  # one too many: nothing to do

    first = hold_workdir(workdir)
    again = WorkdirLock(workdir).acquire()  # a later run in this process (e.g. after a caught Preempted)
    assert holder(workdir)["token"] == again.token
    first.release()  # no longer its lock: left alone
    assert os.path.exists(os.path.join(workdir, LOCK_NAME))
    again.release()
    again.release()
    assert files(workdir) == set()
    release_workdir(workdir)


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` prints on stdout, waiting at most ``timeout`` seconds for it."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from the holder in {timeout} s"
    return proc.stdout.readline().strip()


def start_holder(workdir, mode="hold") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HOLDER, workdir, mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_real_processes_refused_then_killed_then_taken_over(tmp_path):
    workdir = str(tmp_path / "w")
    exits = start_holder(str(tmp_path / "x"), "exit")  # meanwhile: a run that ends without releasing
    first = start_holder(workdir)
    try:
        assert first_line(first, timeout=120) == "held"
        second = subprocess.run([sys.executable, HOLDER, workdir, "hold"], cwd=ROOT, text=True,
                                capture_output=True, timeout=60)
        assert second.returncode == 2 and second.stdout == ""
        line = second.stderr.strip()
        assert "\n" not in line and f"host {socket.gethostname()}, pid {first.pid}" in line, second.stderr
        assert holder(workdir)["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert holder(workdir)["pid"] == first.pid  # SIGKILL leaves the lock behind
    with WorkdirLock(workdir):  # the rerun takes it over
        assert holder(workdir)["pid"] == os.getpid()
    assert files(workdir) == set()
    out, err = exits.communicate(timeout=60)
    assert exits.returncode == 0 and out.strip() == "held", err
    assert files(str(tmp_path / "x")) == set()  # released on exit
