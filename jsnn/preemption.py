"""Stopping cleanly when the scheduler says so: SIGTERM (preemption) and SIGINT (Ctrl-C).

The signal handler only raises a flag. The trainer feeds every process's flag
into the next train step, which returns its maximum over all devices, so every
process of a multi-process run reads the same "stop" from the same step and
stops after the same batch (a process that stopped alone would leave the others
waiting in a collective). The trainer then writes a checkpoint at that batch
and raises ``Preempted``; the programs turn it into one line and a non-zero exit.
Further signals while that checkpoint is written only say so: the write
finishes (orbax writes to a temporary directory and renames it into place).

A program's guard lasts until the process exits (``stop_on_signals(until_exit=True)``): a
signal after the last training step lets the run finish its writes (exit 0, with one line saying
the signal came too late to stop anything), and once the guarded block has ended the signals are
ignored, so the line saying why the program stops, its exit code and the interpreter's shutdown
(JAX's and orbax's exit handlers) are never cut short by a default handler killing the process
without a word.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_installed: list[bool] = []  # non-empty inside stop_on_signals


class Preempted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def _handler(signum, frame):
    del frame
    if _received:
        print(f"{signal.Signals(signum).name} again: already stopping, what is being written is finished first",
              file=sys.stderr, flush=True)
    _received.append(signum)


@contextlib.contextmanager
def stop_on_signals(*, until_exit: bool = False):
    """Within this block SIGTERM and SIGINT request a clean stop instead of killing the process.

    ``until_exit`` (a program's main): when the block ends, however it ends, the signals are ignored
    instead of handed back to the previous handlers (for SIGTERM the default one, which kills the
    process silently), because all that is left is to say how the run ended and exit. A block that
    ends normally with a signal received says in one line that the run finished anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    _installed.append(True)
    finished = False
    try:
        yield
        finished = True
    finally:
        _installed.pop()
        for s, h in previous.items():
            signal.signal(s, signal.SIG_IGN if until_exit else h)
    if until_exit and finished and _received:
        print(f"{signal.Signals(_received[0]).name} came after the last training step: the run finished and is "
              "complete", file=sys.stderr, flush=True)


def take_signals_back() -> None:
    """Re-installs this module's handler inside ``stop_on_signals``: ``jax.distributed.initialize``
    installs JAX's own SIGTERM handler (its preemption notifier), which only records the signal,
    so without this a multi-process run would ignore SIGTERM and train on."""
    if _installed and threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, _handler)


def signal_number() -> int:
    return _received[0] if _received else signal.SIGTERM


def clear() -> None:
    _received.clear()


def local_flags(num_local_devices: int) -> np.ndarray:
    """This process's stop flag, one entry per local device (the step takes their global maximum)."""
    return np.full((num_local_devices,), 1.0 if _received else 0.0, np.float32)
