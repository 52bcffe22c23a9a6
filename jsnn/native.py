"""Building jsnn's small C++ CPU kernels for ``jax.ffi``, once per source, compiler, flags and CPU.

A kernel's source is compiled on first use (``find_compiler``: ``$CXX``, g++, c++, clang++, or zig's
clang from PyPI) into a per-user cache directory keyed by the source, compiler, flags, the jax headers
and the host's CPU features (``-march=native`` builds for this CPU: a node of another CPU sharing the
home directory gets its own build instead of an illegal instruction). Without a compiler ``build``
raises ``CompilerMissing`` with one line that says so. Users: ``jsnn.sparse_inference.kernel`` (the
event-driven spike convolution for inference), ``jsnn.event_conv`` (the one for training), ``jsnn.conv_kernel``
(bf16 convolutions) and ``jsnn.lif_kernel`` (the LIF layer over time).
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import jax

FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")


# ``in_parallel`` (C++): a kernel's work split over XLA's own CPU thread pool (``ffi::ThreadPool``, which a
# handler binds with ``.Ctx<ffi::ThreadPool>()``), and ``scratch``, the buffers each thread keeps. Included after
# "xla/ffi/api/ffi.h" and ``namespace ffi``.
XLA_PARALLEL = r"""
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

// Scratch kept by the calling thread across calls (grown, never shrunk): fresh buffers of tens of MB each
// call would cost page faults comparable to the products. Five of each element type.
template <typename T> static T* scratch(int which, int64_t n) {
  thread_local std::vector<T> buffers[5];
  auto& b = buffers[which];
  if (int64_t(b.size()) < n) b.resize(n);
  return b.data();
}

// Work items [0, n) in ranges of `grain` over XLA's own intra-op threads (the pool XLA's convolutions and
// fusions run on): the kernels add no threads that would compete with XLA's for the cores. The calling thread
// works too; a helper that starts after every range is taken returns at once, and the caller waits only for
// helpers already working (never for one still queued behind other work: no deadlock when every thread of the
// pool is inside such a call). Each item is computed whole by one thread, so results do not depend on which.
struct Helpers {
  std::atomic<int64_t> next{0};
  std::mutex m;
  std::condition_variable done;
  int64_t working = 0;
  bool closed = false;
};

template <typename F> static void in_parallel(ffi::ThreadPool& pool, int64_t n, F f, int64_t grain = 0) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n));
  if (grain <= 0) grain = std::max<int64_t>(1, n / (4 * threads));
  auto h = std::make_shared<Helpers>();
  auto work = [h, n, grain, &f] {
    for (int64_t a; (a = h->next.fetch_add(grain)) < n;) f(a, std::min(n, a + grain));
  };
  for (int64_t t = 1; t < threads; ++t)
    pool.Schedule([h, work] {
      {
        std::lock_guard<std::mutex> lock(h->m);
        if (h->closed) return;
        ++h->working;
      }
      work();
      std::lock_guard<std::mutex> lock(h->m);
      if (--h->working == 0) h->done.notify_all();
    });
  work();
  std::unique_lock<std::mutex> lock(h->m);
  h->closed = true;
  h->done.wait(lock, [&] { return h->working == 0; });
}
"""


class CompilerMissing(RuntimeError):
    """No C++ compiler to build a kernel with."""


def cpu_features() -> str:
    """What ``-march=native`` compiles for: the instruction-set flags of /proc/cpuinfo (x86 "flags", Arm
    "Features") and the machine, else the processor's name where /proc/cpuinfo is missing (macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return f"{platform.machine()} {' '.join(sorted(value.split()))}"
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def cache_dir(subdir: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jsnn", subdir)


def find_compiler(what: str = "a jsnn CPU kernel") -> list[str]:
    """The C++ compiler command: ``$CXX`` if set, else g++, c++ or clang++ on PATH, else the zig
    toolchain from PyPI (``pip install ziglang``; the ``sparse`` extra) run as ``python -m ziglang c++``.
    ``what`` names the kernel in the one-line error when there is none."""
    if os.environ.get("CXX"):
        cmd = os.environ["CXX"].split()
        if shutil.which(cmd[0]) is None:
            raise CompilerMissing(f"{what} needs a C++ compiler: CXX={cmd[0]!r} was not found")
        return cmd
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return [name]
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "c++"]
    raise CompilerMissing(f"{what} needs a C++ compiler: none of g++, c++, clang++ was found; "
                          "install one, or `pip install ziglang` (jsnn's `sparse` extra), or set CXX")


def library_path(name: str, source: str, cxx: list[str], flags: tuple[str, ...], directory: str) -> str:
    """Where the build of ``source`` for this compiler, flags, jax headers and CPU is cached."""
    parts = (source, *cxx, *flags, jax.ffi.include_dir(), cpu_features())
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return os.path.join(directory, f"{name}_{key}.so")


def build(name: str, source: str, flags: tuple[str, ...], directory: str, what: str) -> str:
    """Compiles ``source`` (once per source, flags, compiler and CPU) and returns the shared library's path."""
    cxx = find_compiler(what)
    include = jax.ffi.include_dir()
    path = library_path(name, source, cxx, flags, directory)
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src = os.path.join(tmp, f"{name}.cc")
        with open(src, "w") as f:
            f.write(source)
        out = os.path.join(tmp, f"{name}.so")
        proc = subprocess.run([*cxx, *flags, f"-I{include}", src, "-o", out], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"compiling {what} with {' '.join(cxx)} failed: {tail}")
        os.replace(out, path)  # atomic: a concurrent build leaves one complete file
    return path


def register(library: str, symbols: dict[str, str]) -> None:
    """Loads the shared ``library`` and registers each of its handler ``symbols`` (FFI target name -> exported
    symbol) with XLA's CPU backend."""
    lib = ctypes.cdll.LoadLibrary(library)
    for target, symbol in symbols.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
