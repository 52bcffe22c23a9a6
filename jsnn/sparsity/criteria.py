"""Pruning criteria: (weights, BN variables, statistics) -> scores with the kernels' structure.

A higher score means more important: pruning removes the lowest scores. A
criterion is one function registered by name, so adding one is one function.

    magnitude   |w|
    sf          p = E|dU| * N(V_th; mu, sigma^2)                       (paper Eq. 12)
                E|dU|[k,i,j] = r_i * |w[k,i,j] * gamma_j / sqrt(var_j + eps)|   (Eq. 13)

``sf`` needs firing statistics (stats.py); kernels without them (the
encoding layer, whose input is the image, and the linear layers, with no
BN/LIF after them) keep the magnitude criterion, as SF-IMP-1 prescribes.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from jsnn.variables import kernels

PyTree = Any
CRITERIA: dict[str, Callable] = {}


def register_criterion(name: str):
    def wrap(fn):
        CRITERIA[name] = fn
        return fn

    return wrap


def get_criterion(name: str) -> Callable:
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}")
    return CRITERIA[name]


_abs_tree = jax.jit(lambda tree: jax.tree.map(jnp.abs, tree))


@register_criterion("magnitude")
def magnitude(weights: PyTree, bn_variables: dict | None = None, stats: dict | None = None, **_) -> PyTree:
    del bn_variables, stats
    return _abs_tree(kernels(weights))


def gaussian_density(x, mean, std):
    """N(x; mean, std^2)."""
    return jnp.exp(-0.5 * jnp.square((x - mean) / std)) / (math.sqrt(2.0 * math.pi) * std)


def sf_kernel_scores(kernel, input_rate, bn_scale, running_var, potential_mean, potential_std, *,
                     threshold: float, epsilon: float):
    """Eq. 12-13 for one kernel [..., C_in, C_out]; statistics broadcast over its last two axes."""
    perturbation = input_rate[:, None] * jnp.abs(kernel * (bn_scale / jnp.sqrt(running_var + epsilon)))
    # a channel whose U never varies has no density to speak of; keep it finite
    std = jnp.maximum(potential_std, 1e-6)
    return perturbation * gaussian_density(threshold, potential_mean, std)


def sf_eligible(stats: dict, path: str) -> bool:
    s = stats.get(path, {})
    return "input_rate" in s and "potential_mean" in s


@register_criterion("sf")
def sf(weights: PyTree, bn_variables: dict, stats: dict, *, threshold: float = 1.0, epsilon: float = 1e-5,
       **_) -> PyTree:
    """The SF criterion; ``bn_variables`` = {"bn": scale/bias tree, "batch_stats": mean/var tree}."""
    bn = traverse_util.flatten_dict(bn_variables.get("bn") or {})
    running = traverse_util.flatten_dict(bn_variables["batch_stats"])
    out = {}
    for key, kernel in traverse_util.flatten_dict(kernels(weights)).items():
        prefix, path = key[:-1], "/".join(key[:-1])
        if not sf_eligible(stats, path) or prefix + ("var",) not in running:
            out[key] = jnp.abs(kernel)
            continue
        s = stats[path]
        scale = bn.get(prefix + ("scale",), jnp.ones(kernel.shape[-1]))
        out[key] = _sf_jit(kernel, jnp.asarray(s["input_rate"], jnp.float32), scale, running[prefix + ("var",)],
                           jnp.asarray(s["potential_mean"], jnp.float32), jnp.asarray(s["potential_std"], jnp.float32),
                           threshold=threshold, epsilon=epsilon)
    return traverse_util.unflatten_dict(out)


_sf_jit = jax.jit(sf_kernel_scores, static_argnames=("threshold", "epsilon"))
