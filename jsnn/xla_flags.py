"""The XLA flag jsnn's programs set for the CPU backend before JAX starts one.

jaxlib 0.10 hands every CPU convolution to YNNPACK by default. On the CPUs this project
is measured on, XLA's own (Eigen) convolution is the faster one, forward and backward
(measure it with ``python -m benchmarks.conv_layer``, once as is and once with
``JSNN_KEEP_XLA_FLAGS=1``; whole steps with ``python -m benchmarks.throughput --impls
jsnn,jsnn_ynn``), while YNNPACK's dots are kept. ``configure`` puts ``CPU_CONV_FLAG`` first in ``XLA_FLAGS``
(the leading "-" removes one entry from XLA's default list; first, because XLA stops
reading at a token that is not a ``--`` flag), unless

  * ``XLA_FLAGS`` already says something about ``xla_cpu_experimental_ynn_fusion_type``
    (the user's choice wins), or
  * ``JSNN_KEEP_XLA_FLAGS=1`` is set.

``import jsnn`` changes nothing: the programs in ``train/`` call ``configure`` at start-up
(``train/flags.py``), as do the benchmarks that time jsnn. XLA reads ``XLA_FLAGS`` once,
when the first backend starts, so call it before the first JAX computation. GPU/TPU
backends ignore CPU flags. The flag only picks which library runs a convolution; values
agree to float rounding.
"""
from __future__ import annotations

import os

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"


def configure(environ=os.environ) -> bool:
    """Adds ``CPU_CONV_FLAG`` to ``XLA_FLAGS`` where allowed; returns whether it did."""
    if environ.get("JSNN_KEEP_XLA_FLAGS", "") not in ("", "0"):
        return False
    flags = environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags:
        return False
    environ["XLA_FLAGS"] = f"{CPU_CONV_FLAG} {flags}".strip()
    return True
