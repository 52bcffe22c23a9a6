"""The XLA flag jsnn sets for the CPU backend before JAX starts one, at ``import jsnn``.

jaxlib 0.10 hands every CPU convolution to YNNPACK by default. On the CPUs this project
is measured on, XLA's own (Eigen) convolution is the faster one, forward and backward
(measure it with ``python -m benchmarks.conv_layer``, once as is and once with
``JSNN_KEEP_XLA_FLAGS=1``; whole steps of a user's own script over jsnn's layers with
``python -m benchmarks.library_step``), while YNNPACK's dots are kept. ``configure`` puts
``CPU_CONV_FLAG`` first in ``XLA_FLAGS`` (the leading "-" removes one entry from XLA's default
list; first, because XLA stops reading at a token that is not a ``--`` flag), unless

  * ``XLA_FLAGS`` already says something about ``xla_cpu_experimental_ynn_fusion_type``
    (the user's choice wins),
  * ``JSNN_KEEP_XLA_FLAGS=1`` is set,
  * the installed jaxlib is not one the flag was checked with (``KNOWN_JAXLIB``): XLA aborts
    the whole process on a flag it does not know ("Unknown flag in XLA_FLAGS"), and a GPU
    user's ``pip install -U "jax[cuda12]"`` brings another jaxlib. jsnn then says so in one
    line on stderr and leaves ``XLA_FLAGS`` alone.

``import jsnn`` calls ``configure`` (``jsnn/__init__.py``), so a user's own script over jsnn's
layers gets the programs' convolutions as long as it imports jsnn before its first JAX
computation (``import jax`` alone starts no backend). XLA reads ``XLA_FLAGS`` once, when the
first backend starts: after that the flag changes nothing in this process (JAX offers no
public way to ask whether a backend has started, so jsnn cannot say so; processes started
later inherit it). The programs in ``train/`` and the test suite call ``configure`` again at
start-up, which changes nothing the second time. GPU/TPU backends ignore CPU flags. The flag
only picks which library runs a convolution; values agree to float rounding.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib releases each run with the flag (a jitted 3x3 convolution compiled under it): 0.10.0 accepts it (its
# default is Eigen already), 0.10.1 and 0.10.2 compile the convolution with Eigen under it instead of YNNPACK
# (tests/test_xla_flags.py checks the installed one). Add a release here after checking it; any other is left alone.
KNOWN_JAXLIB = ("0.10.0", "0.10.1", "0.10.2")

_said: set[str] = set()  # the lines already printed in this process (each once)


def jaxlib_version() -> str | None:
    """The installed jaxlib's version, read from its package metadata (importing nothing of JAX)."""
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None


def _say(line: str, stream) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=stream or sys.stderr, flush=True)


def configure(environ=os.environ, *, jaxlib: str | None = None, stream=None) -> bool:
    """Adds ``CPU_CONV_FLAG`` to ``XLA_FLAGS`` where allowed (see the module docstring); returns whether it did.

    ``jaxlib``: the version to judge (default: the installed one). ``stream``: where a skip is said
    (default stderr)."""
    if environ.get("JSNN_KEEP_XLA_FLAGS", "") not in ("", "0"):
        return False
    flags = environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags:
        return False
    version = jaxlib_version() if jaxlib is None else jaxlib
    if version not in KNOWN_JAXLIB:
        _say(f"jsnn: jaxlib {version} is not one jsnn's CPU convolution flag was checked with "
             f"({', '.join(KNOWN_JAXLIB)}), so XLA_FLAGS is left alone (CPU convolutions may run slower); "
             f"to try it, set XLA_FLAGS={CPU_CONV_FLAG} yourself", stream)
        return False
    environ["XLA_FLAGS"] = f"{CPU_CONV_FLAG} {flags}".strip()
    return True
