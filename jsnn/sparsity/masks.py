"""Masks over the maskable kernels: apply, count, and prune by a score.

A mask tree has the structure of ``variables.kernels(weights)``; 1 keeps a
weight, 0 removes it. "Sparsity" everywhere in jsnn is the fraction REMOVED.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.variables import by_name

PyTree = Any


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(
            f"{what} must be the fraction of weights removed, in [0, 1); got {sparsity}"
            " (0.9 keeps 10% of the weights)"
        )
    return float(sparsity)


def count_kept(masks: PyTree) -> tuple[int, int]:
    """(kept, total) over every mask."""
    leaves = jax.tree.leaves(masks)
    return int(sum(np.count_nonzero(np.asarray(m)) for m in leaves)), int(sum(m.size for m in leaves))


def sparsity_of(masks: PyTree) -> float:
    kept, total = count_kept(masks)
    return 1.0 - kept / total


def layer_sparsity_of(masks: PyTree) -> dict[str, float]:
    """{layer path: measured fraction of its weights removed}."""
    return {n: 1.0 - np.count_nonzero(np.asarray(m)) / m.size for n, m in by_name(masks).items()}


def keep_count(n: int, sparsity: float) -> int:
    """Weights a layer of n keeps at ``sparsity``: round((1 - s) n), and at least one."""
    return max(1, int(round((1.0 - sparsity) * n)))


def keep_largest(scores: jax.Array, k) -> jax.Array:
    """{0,1} mask of the same shape keeping exactly the k largest scores (ties: the later index)."""
    flat = scores.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(flat.size, dtype=order.dtype))
    return (rank >= flat.size - k).astype(scores.dtype).reshape(scores.shape)


def _ranked(scores: PyTree, masks: PyTree):
    """Scores with already-pruned weights pushed below every live one."""
    return jax.tree.map(lambda s, m: jnp.where(m > 0, s.astype(jnp.float32), -jnp.inf), scores, masks)


def prune_global(scores: PyTree, masks: PyTree, keep_total: int) -> PyTree:
    """One ranking over all layers: keep the ``keep_total`` highest-scored live weights."""
    ranked = _ranked(scores, masks)
    leaves, treedef = jax.tree.flatten(ranked)
    flat = jnp.concatenate([l.reshape(-1) for l in leaves])
    keep = keep_largest(flat, keep_total)
    out, start = [], 0
    for l in leaves:
        out.append(keep[start:start + l.size].reshape(l.shape))
        start += l.size
    return jax.tree.unflatten(treedef, out)


def prune_per_layer(scores: PyTree, masks: PyTree, keep_per_layer: PyTree) -> PyTree:
    """Within each layer keep its ``keep_per_layer`` highest-scored live weights."""
    return jax.tree.map(lambda s, k: keep_largest(s, k), _ranked(scores, masks), keep_per_layer)


def imp_keep_total(total: int, rate: float, round_index: int) -> int:
    """Weights left after ``round_index`` IMP prunings at ``rate`` each: round(total (1 - rate)^k).

    Counting from the total (not compounding rounded counts) keeps round k's
    sparsity within 0.5 / total of 1 - (1 - rate)^k.
    """
    return int(round(total * (1.0 - rate) ** round_index))


def layer_keep_counts(masks: PyTree) -> PyTree:
    return jax.tree.map(lambda m: int(np.count_nonzero(np.asarray(m))), masks)


def apply_masks(kernels: PyTree, masks: PyTree) -> PyTree:
    return jax.tree.map(lambda w, m: w * m.astype(w.dtype), kernels, masks)
