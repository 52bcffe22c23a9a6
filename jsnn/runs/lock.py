"""One run per workdir: a lock file that works on a shared filesystem.

``WORKDIR/run.lock`` holds JSON naming its holder: host, pid, the run id of a
multi-process run, when it started, and a token of its own. It is created
atomically (a private file hard-linked to that name, or ``O_CREAT | O_EXCL``
where hard links are refused), which NFS makes atomic on the server; ``flock``
is not used (NFS clients do not all honour it).

A second run that finds the lock held stops with ``WorkdirBusyError``, one
line naming the holder. A lock is *stale*, and taken over, when its holder is
gone:

* on the holder's machine (same hostname, boot and pid namespace) when its
  process no longer runs (the pid is gone, or belongs to a process started
  later: pids are reused);
* from any other machine when its heartbeat stopped: the holder's daemon
  thread touches the file every ``heartbeat`` seconds, and a lock untouched
  for ``stale_after`` seconds (measured on the filesystem's clock, not this
  machine's) is stale.

Taking over is atomic: under a short-lived ``run.lock.takeover`` file
(itself exclusive), the stale lock is re-read, and only if it is still the one
judged stale is it replaced by ``os.replace``.

A multi-process run (JAX distributed: process 0 is the primary) holds one lock.
Process 0 writes it; the others only read it and wait until it names their run
id (``run_identity`` forms the id from the launcher's variables, the same in
every process of a run), so they write nothing. A process that finds the lock
held by itself (a second run in the same Python process, e.g. a rerun after a
caught ``Preempted``) keeps it.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid

LOCK_NAME = "run.lock"
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0
MEMBER_WAIT_SECONDS = 120.0


class WorkdirBusyError(ValueError):
    """Another run trains into this workdir."""


def run_identity(process_index: int = 0, process_count: int = 1, environ=None) -> dict:
    """``process_index`` and ``run_id`` for WorkdirLock. ``run_id`` is None for a single process; for
    a multi-process run it is what the launcher set, the same in every process of the run and new
    for each launch, in the order jsnn.parallel joins them: $JSNN_RUN_ID if set; a manual launch's
    coordinator address and process count (``JAX_COORDINATOR_ADDRESS``); SLURM's job and step ids
    (``SLURM_JOB_ID``, ``SLURM_STEP_ID``); Open MPI's job (``OMPI_MCA_orte_hnp_uri``); a Cloud TPU
    slice (``TPU_WORKER_HOSTNAMES``). Another cluster needs $JSNN_RUN_ID."""
    env = os.environ if environ is None else environ
    if process_count <= 1:
        return {"process_index": 0, "run_id": None}
    if env.get("JSNN_RUN_ID"):
        run_id = f"user:{env['JSNN_RUN_ID']}"
    elif env.get("JAX_COORDINATOR_ADDRESS"):
        run_id = f"jax:{env['JAX_COORDINATOR_ADDRESS']}/{process_count}"
    elif env.get("SLURM_JOB_ID"):
        run_id = f"slurm:{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '-')}"
    elif env.get("OMPI_MCA_orte_hnp_uri"):
        run_id = f"ompi:{env['OMPI_MCA_orte_hnp_uri']}"
    elif env.get("TPU_WORKER_HOSTNAMES"):
        run_id = f"tpu:{env['TPU_WORKER_HOSTNAMES']}"
    else:
        raise ValueError(f"cannot tell which run this process belongs to ({process_count} processes, none of "
                         "SLURM_JOB_ID, JAX_COORDINATOR_ADDRESS, OMPI_MCA_orte_hnp_uri, TPU_WORKER_HOSTNAMES "
                         "set): set JSNN_RUN_ID to one value, the same in every process of the run")
    return {"process_index": process_index, "run_id": run_id}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _machine() -> dict:
    """What makes a pid mean the same process: hostname, boot, pid namespace."""
    ident = {"host": socket.gethostname()}
    with contextlib.suppress(OSError):
        ident["boot_id"] = _read("/proc/sys/kernel/random/boot_id").strip()
    with contextlib.suppress(OSError):
        ident["pid_ns"] = os.readlink("/proc/self/ns/pid")
    return ident


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if unknown."""
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_runs(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # runs, as another user
    return start is None or _process_start(pid) in (None, start)


class WorkdirLock:
    """``WorkdirLock(workdir).acquire()`` ... ``release()``, or ``with WorkdirLock(workdir):``.

    ``run_id`` and ``process_index`` come from ``run_identity`` in a multi-process run; process 0
    writes the lock, the others wait (up to ``member_wait`` seconds) until it names ``run_id``.
    """

    def __init__(self, workdir: str, run_id: str | None = None, process_index: int = 0, *,
                 heartbeat: float = HEARTBEAT_SECONDS, stale_after: float = STALE_AFTER_SECONDS,
                 member_wait: float = MEMBER_WAIT_SECONDS):
        self.workdir, self.run_id, self.process_index = workdir, run_id, process_index
        self.path = os.path.join(workdir, LOCK_NAME)
        self.heartbeat, self.stale_after, self.member_wait = heartbeat, stale_after, member_wait
        self.machine = _machine()
        self.token: str | None = None  # set while this process holds the lock it wrote
        self.member = False  # a non-primary process of the run that holds the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the lock says ---------------------------------------------------------------
    def holder(self) -> dict | None:
        """The lock's JSON, {} while it is being written or unreadable, None when there is none."""
        try:
            text = _read(self.path)
        except FileNotFoundError:
            return None
        try:
            found = json.loads(text)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def _age(self) -> float | None:
        """Seconds since the lock was last touched, on the filesystem's clock (a file written
        now gives "now"), or None when it is gone."""
        try:
            touched = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        if self.process_index != 0:  # the run's other processes write nothing
            return time.time() - touched
        probe = os.path.join(self.workdir, f".{LOCK_NAME}.now.{uuid.uuid4().hex}")
        try:
            with open(probe, "w"):
                pass
            now = os.stat(probe).st_mtime
        except OSError:
            now = time.time()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        return now - touched

    def _on_this_machine(self, found: dict) -> bool:
        return all(found.get(k) == v for k, v in self.machine.items())

    def _is_mine(self, found: dict) -> bool:
        """Written by this very process (a run before this one in the same process)."""
        return self._on_this_machine(found) and found.get("pid") == os.getpid()

    def _is_stale(self, found: dict) -> bool:
        if found and self._on_this_machine(found) and isinstance(found.get("pid"), int):
            return not _pid_runs(found["pid"], found.get("pid_start"))
        age = self._age()  # another machine's lock, or one cut short: only its heartbeat can tell
        return age is not None and age > self.stale_after

    def describe(self, found: dict | None) -> str:
        if not found:
            return "a run whose lock is being written or is unreadable"
        who = f"host {found.get('host', '?')}, pid {found.get('pid', '?')}"
        if found.get("run_id"):
            who += f", run {found['run_id']}"
        return f"{who}, started {found.get('started', '?')}"

    def _busy(self, found: dict | None) -> WorkdirBusyError:
        age = self._age()
        beat = f", last heartbeat {age:.0f} s ago" if age is not None else ""
        return WorkdirBusyError(
            f"--workdir {self.workdir} is in use by another run ({self.describe(found)}{beat}). Wait for it to "
            f"finish or stop it, or pass another --workdir; a lock whose run was killed is taken over on the "
            f"rerun (at once on its own host, after {self.stale_after:.0f} s without heartbeat from another host)."
        )

    # -- acquiring ------------------------------------------------------------------------
    def _record(self) -> dict:
        return {**self.machine, "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                "run_id": self.run_id, "token": self.token, "program": " ".join(sys.argv)[:500],
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}

    def _private_file(self) -> str:
        tmp = os.path.join(self.workdir, f".{LOCK_NAME}.{self.token}")
        with open(tmp, "w") as f:
            json.dump(self._record(), f)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _create(self) -> bool:
        """Creates the lock if there is none; whether it did."""
        tmp = self._private_file()
        try:
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno == errno.EEXIST:
                    return False
                if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, its reply was lost
                    return True
            try:  # no hard links on this filesystem
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(_read(tmp))
                f.flush()
                os.fsync(f.fileno())
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _replace(self, judged: dict | None) -> bool:
        """Replaces the lock with ours if it still is ``judged`` (the one found stale)."""
        guard = self.path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a takeover takes milliseconds: one that old died halfway
                if time.time() - os.stat(guard).st_mtime > max(30.0, self.stale_after):
                    os.unlink(guard)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if self.holder() != judged:
                return False
            tmp = self._private_file()
            os.replace(tmp, self.path)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(guard)

    def acquire(self) -> "WorkdirLock":
        """Holds the lock (process 0), or joins the run holding it (other processes of that run).
        Raises WorkdirBusyError when another run holds it."""
        if self.token or self.member:
            return self
        if self.process_index != 0:
            return self._join()
        try:
            os.makedirs(self.workdir, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create --workdir {self.workdir} ({e.strerror}); pass a writable "
                             "directory") from None
        self.token = uuid.uuid4().hex
        for _ in range(20):
            if self._create():
                break
            found = self.holder()
            if found is None:
                continue  # released in between: try again
            same_run = self.run_id is not None and found.get("run_id") == self.run_id
            if self._is_mine(found) or same_run or self._is_stale(found):
                if found.get("token") and not self._is_mine(found) and not same_run:
                    print(f"taking over the lock of a run that is gone ({self.describe(found)}) in {self.workdir}",
                          file=sys.stderr, flush=True)
                if self._replace(found):
                    break
                time.sleep(0.05)
                continue
            self.token = None
            raise self._busy(found)
        else:
            self.token = None
            raise self._busy(self.holder())
        if (self.holder() or {}).get("token") != self.token:  # replaced by a racer in between
            self.token = None
            raise self._busy(self.holder())
        self._start_heartbeat()
        atexit.register(self.release)
        return self

    def _join(self) -> "WorkdirLock":
        """A non-primary process: waits until process 0's lock names this run; writes nothing."""
        deadline = time.monotonic() + self.member_wait
        found = None
        while True:
            found = self.holder()
            if found and self.run_id is not None and found.get("run_id") == self.run_id:
                self.member = True
                return self
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if found:
            raise self._busy(found)
        raise WorkdirBusyError(f"--workdir {self.workdir}: process 0 of run {self.run_id} did not take the workdir "
                               f"lock within {self.member_wait:.0f} s; see process 0's error")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"workdir-lock {self.workdir}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        token = self.token
        while not self._stop.wait(self.heartbeat):
            try:
                found = self.holder() or {}
                if found.get("token") != token:
                    if self._is_mine(found):
                        return  # a later run in this process holds it now
                    print(f"warning: the lock of {self.workdir} was taken over by {self.describe(found)}; "
                          "this run no longer holds it", file=sys.stderr, flush=True)
                    return
                os.utime(self.path)
            except OSError:
                pass  # a passing filesystem error: beat again next time

    # -- releasing ------------------------------------------------------------------------
    def release(self) -> None:
        """Removes the lock if this process wrote it and still holds it; a member just leaves."""
        self.member = False
        if not self.token:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            if (self.holder() or {}).get("token") == self.token:
                os.unlink(self.path)
        self.token = None
        atexit.unregister(self.release)

    @property
    def held(self) -> bool:
        return bool(self.token) or self.member

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_held: dict[str, list] = {}  # realpath -> [lock, holds]


def hold_workdir(workdir: str, run_id: str | None = None, process_index: int = 0, **options) -> WorkdirLock:
    """Holds WORKDIR's lock until as many ``release_workdir`` calls or the end of the process: for a
    run that claims its workdir in one place and ends in another. Nested holds in one process (a
    run inside a run, in the same workdir) share one lock."""
    key = os.path.realpath(workdir)
    if key in _held and _held[key][0].held:
        _held[key][1] += 1
        return _held[key][0]
    lock = WorkdirLock(workdir, run_id, process_index, **options).acquire()
    _held[key] = [lock, 1]
    return lock


def release_workdir(workdir: str) -> None:
    """Undoes one ``hold_workdir``; the last one releases the lock."""
    key = os.path.realpath(workdir)
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] <= 0:
        _held.pop(key)[0].release()
