"""The small data the tests share: digits subsets, the one small digits setup the training tests
share, and random arrays drawn flat.

The small setup (``SMALL_DIGITS``, ``small_digits``; conftest.py's session fixtures
``digits_imp`` and ``digits_edge_popup`` hold one Trainer each for the whole session): a test
that trains on digits takes it unless it needs other settings, so its steps are compiled once per
session (the Trainer's jitted steps, and the session's compilation cache for a program with the
same settings built elsewhere) instead of once per module.

Random arrays: ``normal``, ``uniform`` and ``bernoulli`` equal ``jax.random.normal(key, shape)``
(and so on) bit for bit (threefry numbers its draws by flat index; tests/test_conv.py checks it),
but draw a flat vector and reshape it. XLA compiles a flat draw in about 0.4 s of CPU and a 3-D or
4-D one in about 2 s (jaxlib 0.10 on this project's 2-core machine), once per shape per session."""
import dataclasses
import math

import jax
import jax.numpy as jnp

from jsnn.config import TrainConfig
from jsnn.data import load_dataset
from jsnn.models import build_model
from jsnn.trainer import Trainer


def digits_subset(n_train: int, n_test: int):
    """scikit-learn's digits cut to its first ``n_train`` training and ``n_test`` test images."""
    full = load_dataset("digits")
    return dataclasses.replace(full, train_images=full.train_images[:n_train], train_labels=full.train_labels[:n_train],
                               test_images=full.test_images[:n_test], test_labels=full.test_labels[:n_test])


# 256 training and 128 test images, T = 2, batch 64 (4 steps per epoch), 2 epochs: the settings of
# test_imp, test_edge_popup, test_patterns and test_registry
SMALL_DIGITS = dict(n_train=256, n_test=128, timesteps=2, epochs=2, batch_size=64)
# The tests' runs last seconds: every periodic checkpoint is written (the default writes at most one every 30 s),
# so that an interruption after any epoch resumes from it. tests/test_training.py tests the default.
EVERY_CHECKPOINT = dict(checkpoint_min_seconds=0.0)


def small_digits(method: str):
    """(dataset, config, model, Trainer) of the small setup for ``method`` ("imp", "edge_popup",
    "dense", ...): a new Trainer; conftest.py's session fixtures share one."""
    ds = digits_subset(SMALL_DIGITS["n_train"], SMALL_DIGITS["n_test"])
    config = TrainConfig(timesteps=SMALL_DIGITS["timesteps"], epochs=SMALL_DIGITS["epochs"],
                         batch_size=SMALL_DIGITS["batch_size"], progress=False, **EVERY_CHECKPOINT).resolve(method)
    model = build_model(config, ds.num_classes)
    return ds, config, model, Trainer(config, model, ds)


def normal(key, shape, dtype=jnp.float32):
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def bernoulli(key, p, shape):
    """``jax.random.bernoulli(key, p, shape)``, drawn flat."""
    return jax.random.bernoulli(key, p, (math.prod(shape),)).reshape(shape)
