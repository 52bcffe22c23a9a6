"""The small data the tests share: digits subsets (one compilation per test module) and random
arrays drawn flat.

Random arrays: ``normal``, ``uniform`` and ``bernoulli`` equal ``jax.random.normal(key, shape)``
(and so on) bit for bit (threefry numbers its draws by flat index; tests/test_conv.py checks it),
but draw a flat vector and reshape it. XLA compiles a flat draw in about 0.4 s of CPU and a 3-D or
4-D one in about 2 s (jaxlib 0.10 on this project's 2-core machine), once per shape per session."""
import dataclasses
import math

import jax
import jax.numpy as jnp

from jsnn.data import load_dataset


def digits_subset(n_train: int, n_test: int):
    """scikit-learn's digits cut to its first ``n_train`` training and ``n_test`` test images."""
    full = load_dataset("digits")
    return dataclasses.replace(full, train_images=full.train_images[:n_train], train_labels=full.train_labels[:n_train],
                               test_images=full.test_images[:n_test], test_labels=full.test_labels[:n_test])


def normal(key, shape, dtype=jnp.float32):
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def bernoulli(key, p, shape):
    """``jax.random.bernoulli(key, p, shape)``, drawn flat."""
    return jax.random.bernoulli(key, p, (math.prod(shape),)).reshape(shape)
