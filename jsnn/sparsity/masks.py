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


def _order_preserving_int32(x: jax.Array) -> jax.Array:
    """float32 -> int32 with the order a sort gives (-inf < negatives < zeros < positives < inf < NaN);
    -0 and +0, and any NaNs, map to one value each, so they tie as they do in a sort.

    Denormals are zeros here: XLA's CPU runtime reads them as 0 (denormals-are-zero), a GPU does not,
    so a float comparison would tie a score of 1e-40 with 0 on the CPU and rank it above 0 on a GPU,
    and the masks would differ by backend. The key is computed on the integer bits alone (no float
    comparison), with every magnitude below the smallest normal number flushed to 0."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    magnitude = bits & jnp.int32(0x7FFFFFFF)
    bits = jnp.where(magnitude < jnp.int32(0x00800000), 0, bits)  # +-0 and denormals: +0
    bits = jnp.where(magnitude > jnp.int32(0x7F800000), jnp.int32(0x7FC00000), bits)  # every NaN: one
    return jnp.where(bits >= 0, bits, bits ^ jnp.int32(0x7FFFFFFF))


@jax.jit  # k traced: one compilation per shape, whichever k a round or level asks for
def keep_largest(scores: jax.Array, k) -> jax.Array:
    """{0,1} mask of the same shape keeping exactly the k largest scores (ties: the later index,
    as a stable argsort ranks them).

    No sort: the k-th largest value is found by bisection over the scores' 32-bit patterns (32
    counting passes), then the scores above it are kept, and of those equal to it the last ones
    up to k. A sort or argsort of a VGG-16 layer's 2.4M scores, which edge-popup needs at every
    step, costs several times more on a CPU (benchmarks/results/top_k.md).
    """
    flat = _order_preserving_int32(scores.reshape(-1))

    def halve(_, bounds):  # invariant: count(flat >= lo) >= k, and the answer lies in [lo, hi]
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + ((lo | hi) & 1)  # ceil((lo + hi) / 2) without overflow
        enough = jnp.sum(flat >= mid) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    kth, _ = jax.lax.fori_loop(0, 32, halve, (jnp.int32(-(2**31)), jnp.int32(2**31 - 1)))
    above = flat > kth
    ties = flat == kth
    ties_from_end = jnp.cumsum(ties[::-1].astype(jnp.int32))[::-1]
    keep = above | (ties & (ties_from_end <= k - jnp.sum(above)))
    return keep.astype(scores.dtype).reshape(scores.shape)


def _ranked(scores: PyTree, masks: PyTree):
    """Scores with already-pruned weights pushed below every live one."""
    return jax.tree.map(lambda s, m: jnp.where(m > 0, s.astype(jnp.float32), -jnp.inf), scores, masks)


# The two prunes are jitted whole (counts traced): one program per network instead of one per layer
# shape plus a dozen eager ops, at the first round of every run.
@jax.jit
def prune_global(scores: PyTree, masks: PyTree, keep_total: int) -> PyTree:
    """One ranking over all layers: keep the ``keep_total`` highest-scored live weights."""
    ranked = _ranked(scores, masks)
    leaves, treedef = jax.tree.flatten(ranked)
    flat = jnp.concatenate([leaf.reshape(-1) for leaf in leaves])
    keep = keep_largest(flat, keep_total)
    out, start = [], 0
    for leaf in leaves:
        out.append(keep[start:start + leaf.size].reshape(leaf.shape))
        start += leaf.size
    return jax.tree.unflatten(treedef, out)


@jax.jit
def prune_per_layer(scores: PyTree, masks: PyTree, keep_per_layer: PyTree) -> PyTree:
    """Within each layer keep its ``keep_per_layer`` highest-scored live weights."""
    return jax.tree.map(lambda s, k: keep_largest(s, k), _ranked(scores, masks), keep_per_layer)


def layer_keep_counts(masks: PyTree) -> PyTree:
    return jax.tree.map(lambda m: int(np.count_nonzero(np.asarray(m))), masks)


@jax.jit  # one program, not an eager multiply per kernel shape (a {0, 1} mask: the same values)
def apply_masks(kernels: PyTree, masks: PyTree) -> PyTree:
    return jax.tree.map(lambda w, m: w * m.astype(w.dtype), kernels, masks)
