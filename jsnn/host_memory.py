"""Giving the C heap's free memory back to the operating system, so that a run's resident memory is
what it holds, not what it once held.

glibc's malloc keeps what a program frees in its arenas for reuse and returns it to the system only
from the top of the main heap, and only past a threshold. XLA's compiler allocates and frees up to over
a hundred MB on the C heap for a large program, and the evaluation, counting and checkpoint passes
leave freed buffers of their own; one live allocation above them keeps all of it resident, so a run's
resident set grows with every program compiled and every phase run, and the next compilation stacks
its own working memory on top of that. ``malloc_trim(0)`` hands every free page of every arena back
(``madvise``): the memory stays mapped, so a later allocation reuses it at the cost of a page fault.

The programs call ``release_after_each_compile`` once at start-up and a run calls
``release_free_memory`` where a segment starts and ends (``RELEASE_ENTERING`` in ``jsnn/runs/run.py``:
before the evaluation, the cost report, pruning). ``benchmarks/freed_memory.py`` measures what it saves
and costs, ``benchmarks/time_to_ticket.py`` the peak memory it leaves. Where the C library is not glibc
(macOS, musl), or with ``JSNN_KEEP_FREED_MEMORY=1`` in the environment, both do nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per program XLA compiles


@functools.cache
def _malloc_trim():
    if os.environ.get("JSNN_KEEP_FREED_MEMORY", "") not in ("", "0"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # not glibc: no malloc_trim
        return None


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system; False where the C library cannot (not glibc) or the
    environment says not to (``JSNN_KEEP_FREED_MEMORY=1``)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


# What the compiler frees grows with how long it compiled: most after the few longest programs (a run's
# steps, cost report and pruning), a few MB after each of the many short ones. A release makes the next
# compilation fault back in what it reuses, so only the longest are worth one; what the others leave goes
# back as the run enters its next phase.
LONG_COMPILE_SECONDS = 0.5


def _after_compile(event: str, duration_secs: float, **_) -> None:
    if event == BACKEND_COMPILE_EVENT and duration_secs >= LONG_COMPILE_SECONDS:
        release_free_memory()


@functools.cache
def release_after_each_compile() -> None:
    """From now on, the compiler's working memory goes back to the system as each long compilation ends.
    Registers once per process (JAX keeps its listeners for the process's life)."""
    jax.monitoring.register_event_duration_secs_listener(_after_compile)
