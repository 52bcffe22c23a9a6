"""Masks from scores (edge-popup's supermasks: Ramanujan et al. 2020; paper Sec. 5, Eq. 11): per layer,
the top-k |scores|, with the straight-through gradient, and the scores' initialisation. The edge-popup
method's training rule is ``jsnn.training_rules.EdgePopup``, its runs ``jsnn/runs/edge_popup.py``.

Forward: per layer, keep the weights whose |score| is in the top (1 - sparsity)
fraction. Backward: straight-through, the top-k passes dL/dm unchanged to
|s|, so every score (of kept and dropped weights alike) receives
dL/d(w m) * w, the gradient its masked weight would get (paper Eq. 11: the top-k passed through unchanged),
times sign(s) from the |.|: as in the reference code (GetSubnet applied to
scores.abs()). Without the sign, a step on a negative score would move its
|s| the wrong way, and the search does not learn.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jsnn.sparsity import patterns
from jsnn.sparsity.masks import keep_count, keep_largest

PyTree = Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _top_k(magnitudes, k: int):
    return keep_largest(magnitudes, k)


def _fwd(magnitudes, k):
    return _top_k(magnitudes, k), None


def _bwd(k, _, g):
    return (g,)  # straight through the top-k


_top_k.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pattern_top_k(magnitudes, k: int, sparsity_type: str):
    return patterns.keep(sparsity_type, magnitudes, k)


def _pattern_fwd(magnitudes, k, sparsity_type):
    return _pattern_top_k(magnitudes, k, sparsity_type), None


def _pattern_bwd(k, sparsity_type, _, g):
    return (g,)  # straight through, as the unstructured top-k


_pattern_top_k.defvjp(_pattern_fwd, _pattern_bwd)


def top_k_mask(scores: jax.Array, sparsity: float, sparsity_type: str = patterns.UNSTRUCTURED) -> jax.Array:
    """{0,1} mask keeping round((1 - sparsity) n) largest |scores|; straight-through gradient.

    A structured ``sparsity_type`` (``patterns.py``) keeps them in its pattern: channel rounds the count
    to whole output channels, N:M keeps n of every m along the input axis whatever the sparsity (which
    then only tells a dense layer, 0, from a masked one).
    """
    if sparsity == 0.0:  # a dense layer: all ones
        return jnp.ones_like(scores)
    if sparsity_type == patterns.UNSTRUCTURED:
        return _top_k(jnp.abs(scores), keep_count(scores.size, sparsity))
    return _pattern_top_k(jnp.abs(scores), keep_count(scores.size, sparsity), sparsity_type)


def masks_from_scores(scores: PyTree, sparsities: PyTree, sparsity_type: str = patterns.UNSTRUCTURED) -> PyTree:
    """Per-layer top-k masks; ``sparsities`` is a float per layer (same tree as scores)."""
    return jax.tree.map(functools.partial(top_k_mask, sparsity_type=sparsity_type), scores, sparsities)


def init_scores(key: jax.Array, kernels: PyTree) -> PyTree:
    """Kaiming uniform scores, as edge-popup's ``kaiming_uniform_(scores, a=sqrt(5))``:
    U(-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)) = sqrt(1 / fan_in)."""
    leaves, treedef = jax.tree.flatten(kernels)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves):
        fan_in = math.prod(w.shape[:-1])
        bound = math.sqrt(1.0 / fan_in)
        # drawn flat and reshaped (the same numbers; see jsnn.layers on why)
        out.append(jax.random.uniform(k, (w.size,), jnp.float32, -bound, bound).reshape(w.shape))
    return jax.tree.unflatten(treedef, out)
