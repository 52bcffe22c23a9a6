"""The test process runs jsnn as the programs do: with jsnn's XLA flag (jsnn/xla_flags.py), set
before any test starts a JAX backend (the programs set it at start-up, train/flags.py)."""
import os
import tempfile

import jax
import pytest

from jsnn import xla_flags

# The suite's programs are small and compiled once each, so compiling them is much of its time: LLVM's
# cheapest code generation (XLA's passes on the HLO are the same) compiles them faster; the programs
# the tests start inherit it.
for _flag in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
xla_flags.configure()

# One persistent compilation cache for the whole session, in-process tests and the programs the
# tests start alike (as a user's programs share ~/.cache/jsnn/jax): a program compiled by one test
# module is loaded by the next. A fresh folder per session, so a run never depends on an earlier one.
# The pytest-xdist workers of one run share one folder (named by the run's id), so a program one
# worker compiled is loaded by the other.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _RUN:
    _CACHE = os.path.join(tempfile.gettempdir(), f"jsnn-tests-jax-cache-{_RUN}")
    os.makedirs(_CACHE, exist_ok=True)
else:
    _CACHE = tempfile.mkdtemp(prefix="jsnn-tests-jax-cache-")
os.environ["JSNN_COMPILATION_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# Every product a test computes without naming a precision (its references included) is exact f32, as
# jsnn's layers compute f32 on every backend (jsnn/precision.py): on a GPU the default would be TF32, and
# equality tests would compare two roundings. (A no-op on the CPU.)
jax.config.update("jax_default_matmul_precision", "highest")

from jsnn.config import TrainConfig  # noqa: E402  (after the XLA flag: these import jsnn.trainer)
from jsnn.models import build_model  # noqa: E402
from jsnn.trainer import Trainer  # noqa: E402
from tests.small_data import EVERY_CHECKPOINT, digits_subset, small_digits  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores this process may use (up to addopts' 4): many tests start
    programs and wait for them, and the spare worker keeps the cores busy meanwhile."""
    return len(os.sched_getaffinity(0)) + 1


@pytest.fixture(scope="session")
def digits_imp():
    """The small digits setup for IMP (tests/small_data.py): (dataset, config, model, Trainer), one
    Trainer for the session, so its steps compile once."""
    return small_digits("imp")


@pytest.fixture(scope="session")
def digits_sparse_training():
    """(config, dataset, Trainer) of SET/RigL and the energy method on 192 digits, T = 2, batch 64, 2 epochs,
    a checkpoint every step: shared by test_sparse_training and test_energy, so its steps compile once."""
    ds = digits_subset(192, 64)
    config = TrainConfig(timesteps=2, epochs=2, batch_size=64, progress=False,
                         checkpoint_every_steps=1, **EVERY_CHECKPOINT).resolve("sparse_training")
    return config, ds, Trainer(config, build_model(config, ds.num_classes), ds)


@pytest.fixture(scope="session")
def digits_edge_popup():
    """The small digits setup for edge-popup (tests/small_data.py), one Trainer for the session."""
    return small_digits("edge_popup")
