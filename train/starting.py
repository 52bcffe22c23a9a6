"""The first thing every program in train/ imports (through train/flags.py): until the program takes the
signals over (``run_cleanly``, train/flags.py), a SIGTERM or SIGINT stops it with one line and exit
128 + the signal, instead of killing it without a word while JAX and jsnn are still being imported
(seconds). Nothing has been written at that point, so the line says to rerun the same command.

Only a program run as itself installs this: a test or a user importing a program's module keeps its own
handlers."""
from __future__ import annotations

import os
import signal
import sys


def _stop_while_starting(signum, frame) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"stopped by {name} while starting, before anything was written: rerun the same command\n".encode())
    os._exit(128 + signum)  # mid-import: no exit handlers to run, nothing to flush


def guard_the_start() -> bool:
    """Installs the handler when the running script is a program in train/; whether it did."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main or os.path.dirname(os.path.abspath(main)) != os.path.dirname(os.path.abspath(__file__)):
        return False
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_while_starting)
    return True


guard_the_start()
