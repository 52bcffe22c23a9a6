"""Programs started by the tests, several at once: each spends most of its time importing (one
core), so independent commands started together finish in about half the time on two cores."""
import json
import os
import subprocess
import sys
import threading
import time


def run_together(commands, envs=None, timeout=300, signals=None, **popen) -> list[subprocess.CompletedProcess]:
    """Every command in ``commands`` started at once, command i with environment ``envs[i]`` (None:
    this process's), ``popen`` (subprocess.Popen's keywords) shared; their results in the same order,
    as ``subprocess.run(..., capture_output=True, text=True)`` gives them.

    ``signals[i]``, when given, is ``(prefix, signum, every)``: once command i prints a line starting
    with ``prefix`` on stdout, it is sent ``signum`` at once, and again every ``every`` seconds until it
    exits (``every`` None: once). Every command is killed after ``timeout`` seconds."""
    envs = envs or [None] * len(commands)
    signals = signals or [None] * len(commands)
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)
             for c, env in zip(commands, envs, strict=True)]
    outputs = [{"stdout": [], "stderr": []} for _ in procs]
    readers = []
    for p, out, sig in zip(procs, outputs, signals, strict=True):
        readers.append(threading.Thread(target=_read_lines, args=(p, "stdout", out["stdout"], sig), daemon=True))
        readers.append(threading.Thread(target=_read_lines, args=(p, "stderr", out["stderr"], None), daemon=True))
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.0))
        for r in readers:
            r.join(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    return [subprocess.CompletedProcess(c, p.returncode, "".join(out["stdout"]), "".join(out["stderr"]))
            for c, p, out in zip(commands, procs, outputs)]


def _read_lines(proc: subprocess.Popen, stream: str, lines: list, sig) -> None:
    """Collects ``proc``'s ``stream`` line by line; with ``sig`` = (prefix, signum, every), signals it as
    run_together says."""
    for line in getattr(proc, stream):
        lines.append(line)
        if sig is not None and line.startswith(sig[0]):
            _send(proc, sig[1], sig[2])
            sig = None
    getattr(proc, stream).close()


def _send(proc: subprocess.Popen, signum: int, every: float | None) -> None:
    """``signum`` to ``proc`` now and, with ``every``, again every ``every`` seconds until it exits (in
    a thread of its own, so the output keeps being read)."""
    def repeat():
        while proc.poll() is None:
            try:
                os.kill(proc.pid, signum)
            except ProcessLookupError:
                return
            if every is None:
                return
            time.sleep(every)

    threading.Thread(target=repeat, daemon=True).start()


# A script's first argument: the CPUs to pin it to ("0,1"), applied before it imports jax (which sizes XLA's
# thread pool by the CPUs the process may use)
PIN_TO_CPUS = "import os, sys\nos.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')})\n"
CAN_PIN_TWO_CPUS = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def output_on_one_and_two_cpus(script: str) -> tuple[str, str]:
    """``script``'s stdout pinned to one CPU and to two (both at once; ``PIN_TO_CPUS`` is put before it)."""
    cpus = sorted(os.sched_getaffinity(0))
    done = run_together([[sys.executable, "-c", PIN_TO_CPUS + script, ",".join(map(str, which))]
                         for which in (cpus[:1], cpus[:2])], envs=[{**os.environ, "JAX_PLATFORMS": "cpu"}] * 2)
    for out in done:
        assert out.returncode == 0, out.stderr[-2000:]
    return done[0].stdout, done[1].stdout


def two_device_script(name: str, env: dict | None = None) -> dict:
    """What ``tests/scripts/<name>`` prints as its last line (JSON), run in a process of two CPU devices
    (``env``: the environment, this process's by default)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", name)
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300,
                         env={**(os.environ if env is None else env),
                              "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
