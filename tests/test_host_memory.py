"""Free C-heap memory goes back to the system (jsnn/host_memory.py): after the compiler's long
compilations, and where a run's segment starts or ends (the run's side: tests/test_registry.py)."""
import ctypes

import jax
import jax.numpy as jnp
import pytest

from benchmarks.common import rss_bytes
from jsnn import host_memory

glibc = pytest.mark.skipif(host_memory._malloc_trim() is None, reason="the C library is not glibc")


def resident_mib() -> float:
    return rss_bytes() / 2**20


@glibc
def test_freed_heap_memory_leaves_the_resident_set():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 8192, 12_000  # 94 MiB in blocks below malloc's mmap threshold: on the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    pin = libc.malloc(size)  # above them: free() alone cannot shrink the heap past it
    for block in blocks:
        ctypes.memset(block, 1, size)  # resident
    for block in blocks:
        libc.free(block)
    freed_but_held = resident_mib()
    assert host_memory.release_free_memory()
    released = resident_mib()
    libc.free(pin)
    assert freed_but_held - released > 60, (freed_but_held, released)


def test_nothing_to_call_where_the_c_library_is_not_glibc_or_the_user_says_not_to(monkeypatch):
    monkeypatch.setattr(host_memory, "_malloc_trim", lambda: None)
    assert host_memory.release_free_memory() is False
    monkeypatch.undo()
    monkeypatch.setenv("JSNN_KEEP_FREED_MEMORY", "1")
    host_memory._malloc_trim.cache_clear()
    try:
        assert host_memory.release_free_memory() is False
    finally:
        monkeypatch.undo()
        host_memory._malloc_trim.cache_clear()


def test_long_compilations_release_what_the_compiler_freed(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "release_free_memory", lambda: calls.append(1))
    host_memory.release_after_each_compile()
    host_memory.release_after_each_compile()  # registers once
    jax.monitoring.record_event_duration_secs(host_memory.BACKEND_COMPILE_EVENT, 1.0)
    assert calls == [1]
    jax.monitoring.record_event_duration_secs(host_memory.BACKEND_COMPILE_EVENT, 0.01)  # short: kept
    jax.monitoring.record_event_duration_secs("/jax/core/compile/jaxpr_trace_duration", 1.0)
    assert calls == [1]
    # JAX still reports its compilations under that name: a program compiled now is seen
    x = jnp.arange(7.0)
    monkeypatch.setattr(host_memory, "LONG_COMPILE_SECONDS", 0.0)
    jax.jit(lambda x: jnp.sin(x) * 3.25 + 1.5)(x).block_until_ready()
    assert calls == [1, 1]
