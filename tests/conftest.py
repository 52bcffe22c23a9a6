"""The test process runs jsnn as the programs do: with jsnn's XLA flag (jsnn/xla_flags.py), set
before any test starts a JAX backend (the programs set it at start-up, train/flags.py)."""
import os
import tempfile

import jax

from jsnn import xla_flags

xla_flags.configure()

# One persistent compilation cache for the whole session, in-process tests and the programs the
# tests start alike (as a user's programs share ~/.cache/jsnn/jax): a program compiled by one test
# module is loaded by the next. A fresh folder per session, so a run never depends on an earlier one.
_CACHE = tempfile.mkdtemp(prefix="jsnn-tests-jax-cache-")
os.environ["JSNN_COMPILATION_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
