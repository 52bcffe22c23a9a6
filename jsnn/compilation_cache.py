"""JAX's persistent compilation cache for the programs: a rerun, a resume after preemption, the
next seed or the next IMP run of the same network loads its compiled programs instead of
compiling them again (``benchmarks/time_to_ticket.py`` measures what that saves).

``JSNN_COMPILATION_CACHE`` names the folder (default ``~/.cache/jsnn/jax``); ``off`` turns it off.
"""
from __future__ import annotations

import os

import jax

DEFAULT = os.path.join("~", ".cache", "jsnn", "jax")


def enable_compilation_cache(environ=os.environ) -> str | None:
    """Points JAX's persistent cache at the folder; returns it, or None when turned off."""
    folder = environ.get("JSNN_COMPILATION_CACHE", DEFAULT)
    if folder.strip().lower() in ("", "off", "0", "none"):
        return None
    folder = os.path.abspath(os.path.expanduser(folder))
    jax.config.update("jax_compilation_cache_dir", folder)
    # every program, not only those that take a second to compile: a digits IMP run compiles
    # about 200 small ones (initialisation and pruning run op by op), which add up
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
