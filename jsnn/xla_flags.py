"""XLA flags jsnn sets for the CPU backend before JAX starts one.

jaxlib 0.10 hands every CPU convolution to YNNPACK by default. On the 2-core
Xeon (AVX-512, AMX) this project is measured on, YNNPACK's f32 convolution
runs at about half the FLOP rate of XLA's own (Eigen) convolution, forward and
backward alike (conv 64->128 at 32x32, batch 160: 103 vs 222 GFLOP/s forward,
66 vs 204 GFLOP/s forward + backward; ``benchmarks/conv_layer.py``). YNNPACK's
dots stay on: they are as fast as Eigen's in f32 and use AMX in bf16.

So ``import jsnn`` puts ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
first in ``XLA_FLAGS`` (the leading "-" removes one entry from XLA's default
list; first, because XLA stops reading at a token that is not a ``--`` flag),
unless

  * ``XLA_FLAGS`` already says something about ``xla_cpu_experimental_ynn_fusion_type``
    (the user's choice wins), or
  * ``JSNN_KEEP_XLA_FLAGS=1`` is set.

XLA reads ``XLA_FLAGS`` once, when the first backend starts: import jsnn
before running any JAX computation, or the flag is not applied and
``configure`` warns. GPU/TPU backends ignore CPU flags. The flag only picks
which library runs a convolution; values agree to float rounding.
"""
from __future__ import annotations

import os
import warnings

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # jax not imported yet, or moved: nothing can have started
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def configure(environ=os.environ) -> bool:
    """Adds ``CPU_CONV_FLAG`` to ``XLA_FLAGS`` where allowed; returns whether it did."""
    if environ.get("JSNN_KEEP_XLA_FLAGS", "") not in ("", "0"):
        return False
    flags = environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags:
        return False
    if _backends_started():
        warnings.warn(
            "jsnn was imported after JAX started its backends, so XLA keeps YNNPACK's CPU "
            "convolutions (about 2x slower here). Import jsnn before the first JAX computation, "
            f"or set XLA_FLAGS={CPU_CONV_FLAG} yourself.",
            stacklevel=3,
        )
        return False
    environ["XLA_FLAGS"] = f"{CPU_CONV_FLAG} {flags}".strip()
    return True
