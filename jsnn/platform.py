"""Which backend a run computes on, a platform the user requires, and GPU determinism.

A GPU host without JAX's CUDA plugin (``pip install "jsnn[cuda12]"``, docs/gpu.md) falls back to the
CPU with one log warning and trains there, hours slower. So a run records where it ran
(``describe``: ``jax.default_backend()`` and the device kind, in config.json and the epoch line),
and ``--platform gpu`` stops it in one line when JAX did not find the GPU (``require``).

Deterministic GPU kernels (``--deterministic``): XLA's GPU scatter-adds and some reductions and
convolution algorithms use atomics, so two runs, or a run and its resumption, differ in the last
bits and then in spikes. ``DETERMINISTIC_FLAGS`` make XLA pick only deterministic kernels; the
cost is measured on a GPU by ``benchmarks/gpu_check.py``. XLA reads ``XLA_FLAGS`` once, when the
first backend starts, so ``configure`` runs before any JAX computation. The persistent compilation
cache (jsnn/compilation_cache.py) stays on: a resumed run loads the programs, and so the kernels and
autotuning choices, the first run compiled. CPU kernels are deterministic either way.

The signature (the settings a workdir belongs to) holds the platform where it is not the CPU and
``deterministic`` where it is on: a CPU run's signature, and so its workdir, is as before either existed.
"""
from __future__ import annotations

import os

import jax

from jsnn import xla_flags

PLATFORMS = ("cpu", "gpu", "tpu")  # the names jax.default_backend() gives (CUDA and ROCm are both "gpu")
DETERMINISTIC_FLAGS = ("--xla_gpu_deterministic_ops=true", "--xla_gpu_exclude_nondeterministic_ops=true")
# jaxlib releases known to accept DETERMINISTIC_FLAGS (XLA aborts the whole process on a flag it does not
# know, and XLA renames and retires GPU flags): a jaxlib started with them (benchmarks/gpu_check.py's flag
# guard, tests/test_gpu_readiness.py). Add a release here after checking it.
DETERMINISTIC_JAXLIB = ("0.10.2",)
INSTALL = {"gpu": 'pip install "jsnn[cuda12]" (or [cuda13]) on a host with an NVIDIA driver',
           "tpu": 'pip install "jsnn[tpu]" on a Cloud TPU VM', "cpu": "unset JAX_PLATFORMS (it names another platform)"}


def configure(platform: str | None = None, deterministic: bool = False, environ=os.environ,
              jaxlib: str | None = None) -> None:
    """Before the backend starts: ``--platform cpu`` keeps JAX on the CPU (a GPU host otherwise picks its
    GPU); ``deterministic`` adds ``DETERMINISTIC_FLAGS`` to ``XLA_FLAGS`` (flags already there are kept),
    under a jaxlib known to accept them (``jaxlib``: the version to judge, default the installed one),
    else a ValueError in one line: a flag XLA does not know would abort the process."""
    if platform is not None and platform not in PLATFORMS:
        raise ValueError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    if platform == "cpu" and not _platforms_chosen():  # JAX read JAX_PLATFORMS at import: set its config
        jax.config.update("jax_platforms", "cpu")
    if deterministic and not is_deterministic(environ):
        version = xla_flags.jaxlib_version() if jaxlib is None else jaxlib
        if version not in DETERMINISTIC_JAXLIB:
            raise ValueError(f"--deterministic: jaxlib {version} is not one its XLA flags were checked with "
                             f"({', '.join(DETERMINISTIC_JAXLIB)}), and XLA aborts on a flag it does not know; set "
                             f"XLA's deterministic flags in XLA_FLAGS yourself (e.g. {DETERMINISTIC_FLAGS[1]})")
        flags = environ.get("XLA_FLAGS", "")
        more = [f for f in DETERMINISTIC_FLAGS if f.split("=")[0] not in flags]
        environ["XLA_FLAGS"] = " ".join([flags, *more]).strip()


def _platforms_chosen() -> bool:
    """Whether JAX_PLATFORMS (or jax.config) already names the platforms: the user's choice stands."""
    return bool(jax.config.jax_platforms)


def is_deterministic(environ=os.environ) -> bool:
    """Whether XLA_FLAGS asks for deterministic GPU kernels (by ``--deterministic`` or by hand)."""
    flags = environ.get("XLA_FLAGS", "")
    return any(f in flags for f in DETERMINISTIC_FLAGS)


def describe(backend: str | None = None) -> dict:
    """Where this process computes: {"platform": "cpu"|"gpu"|"tpu", "device_kind": ..., "device_count": ...}."""
    backend = backend or jax.default_backend()
    devices = jax.devices(backend)
    return {"platform": backend, "device_kind": devices[0].device_kind, "device_count": len(devices)}


def require(platform: str | None, backend: str | None = None) -> None:
    """A ValueError in one line when JAX computes on another platform than ``platform`` (None: any)."""
    if platform is None:
        return
    if platform not in PLATFORMS:
        raise ValueError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    backend = backend or jax.default_backend()
    if backend != platform:
        raise ValueError(f"--platform {platform} asked for, but JAX runs on {backend} "
                         f"(jax {jax.__version__}, {describe(backend)['device_kind']}); "
                         f"{INSTALL[platform]}, or drop --platform")


def signature_fields(backend: str | None = None, environ=os.environ) -> dict:
    """What the run signature holds about the platform: nothing for a CPU run with default flags."""
    backend = backend or jax.default_backend()
    fields = {} if backend == "cpu" else {"platform": backend}
    if is_deterministic(environ):
        fields["deterministic"] = True
    return fields


def record(backend: str | None = None) -> dict:
    """The platform fields config.json keeps beside the configuration."""
    return describe(backend)


def line(backend: str | None = None) -> str:
    """'cpu', or e.g. 'gpu (NVIDIA H100 80GB HBM3 x4)': where an epoch ran, for its log line."""
    d = describe(backend)
    return d["platform"] if d["platform"] == "cpu" else f"{d['platform']} ({d['device_kind']} x{d['device_count']})"


__all__ = ["DETERMINISTIC_FLAGS", "PLATFORMS", "configure", "describe", "is_deterministic", "line", "record",
           "require", "signature_fields"]
