"""Dynamic sparse training (SET, Mocanu et al. 2018; RigL, Evci et al. 2020): the mask update.

Pure and jittable with static shapes, so a train step can run it under ``lax.cond`` (no host round
trip, no recompilation). Per layer, with M the mask, W the stored kernel (exactly 0 where M = 0) and
``n_ones = sum(M)`` (google-research/rigl ``sparse_optimizers_base._get_update_op``, as in
RigL's paper; where jaxpruner differs, said):

1. ``n_prune = floor(n_ones * alpha_t)`` (rigl's rounding, in float32 as rigl-TF computes it;
   jaxpruner keeps ``round(n_ones * (1 - alpha_t))`` instead and drops 2, not 1, of 10 at 0.15).
2. Drop: keep the ``n_ones - n_prune`` largest ``|M * W|`` among the active entries.
3. Grow: among the entries not kept (the ones just dropped compete too, so a weight can be dropped
   and regrown in the same update) take the ``n_prune`` largest grow scores: uniform random numbers
   (SET) or ``|dL/d(M * W)|``, the dense gradient with respect to the effective weight (RigL).
4. Newly grown entries (not in M) get W = 0 and every optimizer-state leaf shaped like the kernel is
   zeroed there (rigl's ``grow_init='zeros'`` and slot reset); a dropped-and-regrown weight keeps its
   value and moments; dropped weights are set to 0. Each layer keeps exactly ``n_ones`` weights.

Ties: every ranking puts the lower flat index first among equal scores (``lax.top_k``'s order, as
jaxpruner); rigl-TF breaks them with N(0, 1e-5) noise instead, which is left out here so that an
update is reproducible and testable. The drop fraction follows rigl's cosine schedule,
``alpha_t = alpha * 0.5 * (1 + cos(pi * min(t, T_end) / T_end))`` with ``t`` the global step, and
updates happen at the steps with ``t % update_every == 0`` and ``t <= T_end`` (jaxpruner's
``PeriodicSchedule`` with start 0; rigl-TF updates at step 0 too).

Initial masks (``initial_masks``): per-layer densities of a shape distribution of
``jsnn.sparsity.distributions`` (uniform or ERK), each layer keeping exactly
``max(1, round(density * size))`` weights (jsnn's ``masks.keep_count`` rounding, as IMP and
edge-popup count) at uniformly random positions.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jsnn.sparsity import distributions
from jsnn.sparsity.masks import _order_preserving_int32
from jsnn.variables import by_name, from_names, kernels, with_kernels

PyTree = Any

ALGORITHMS = ("set", "rigl")


# -- the schedule ------------------------------------------------------------------------------------------


def drop_fraction_at(step, drop_fraction: float, end_step: int) -> jax.Array:
    """rigl's cosine-decayed drop fraction at global step ``step`` (float32; 0 from ``end_step`` on)."""
    t = jnp.minimum(jnp.asarray(step, jnp.float32), jnp.float32(end_step))
    return jnp.float32(drop_fraction) * 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * t / jnp.float32(max(end_step, 1))))


def is_update_step(step, update_every: int, end_step: int) -> jax.Array:
    """Whether the mask is updated at global step ``step``: every ``update_every`` steps up to ``end_step``."""
    step = jnp.asarray(step, jnp.int32)
    return (step % update_every == 0) & (step <= end_step)


def update_steps(total_steps: int, update_every: int, end_step: int) -> list[int]:
    """The steps among ``0 .. total_steps - 1`` at which the mask is updated."""
    return [t for t in range(0, min(total_steps - 1, end_step) + 1, update_every)]


# -- initial masks -----------------------------------------------------------------------------------------


def layer_counts(shapes: dict[str, tuple], sparsity: float, distribution: str = "erk", dense=()) -> dict[str, int]:
    """{layer: weights kept} of a shape distribution (uniform or erk) at overall ``sparsity``."""
    targets = distributions.layer_targets(distribution, shapes, sparsity, tuple(dense))
    return {n: max(1, int(round((1.0 - targets[n]) * math.prod(s)))) for n, s in shapes.items()}


def initial_masks(key: jax.Array, like_masks: PyTree, sparsity: float, distribution: str = "erk",
                  dense=()) -> PyTree:
    """Random masks with exactly ``layer_counts`` ones per layer (positions: a random permutation's prefix)."""
    shapes = {n: tuple(m.shape) for n, m in by_name(like_masks).items()}
    counts = layer_counts(shapes, sparsity, distribution, dense)
    out = {}
    for i, (name, m) in enumerate(by_name(like_masks).items()):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
        flat = np.zeros(m.size, np.asarray(m).dtype)
        flat[order[:counts[name]]] = 1
        out[name] = jnp.asarray(flat.reshape(m.shape))
    return from_names(out)


# -- one update --------------------------------------------------------------------------------------------


def _descending_ranks(scores: jax.Array) -> jax.Array:
    """Rank of each entry of a flat float array, largest first, ties by lower index (stable sort of an
    order-preserving integer key, so -0 / +0 compare equal, and denormals equal 0 on every backend)."""
    key = _order_preserving_int32(scores)  # ascending with the float order
    order = jnp.argsort(~key, stable=True)  # ~key: descending, no overflow
    return jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))


def update_layer_mask(mask: jax.Array, weight: jax.Array, grow_score: jax.Array, alpha) -> tuple[jax.Array, jax.Array]:
    """(new mask, newly grown) of one layer, both bool and shaped like ``mask``; ``grow_score`` >= 0."""
    shape = mask.shape
    active = mask.reshape(-1) > 0
    n_ones = jnp.sum(active, dtype=jnp.int32)
    n_prune = jnp.floor(n_ones.astype(jnp.float32) * jnp.asarray(alpha, jnp.float32)).astype(jnp.int32)
    drop_score = jnp.where(active, jnp.abs(weight.reshape(-1)).astype(jnp.float32), -1.0)
    kept = _descending_ranks(drop_score) < n_ones - n_prune
    candidates = jnp.where(kept, -1.0, jnp.abs(grow_score.reshape(-1)).astype(jnp.float32))
    grown = (_descending_ranks(candidates) < n_prune) & ~kept
    new = kept | grown
    return new.reshape(shape), (grown & ~active).reshape(shape)


def zero_state_at(opt_state: PyTree, where: PyTree, prefix: tuple[str, ...] = ("weights",)) -> PyTree:
    """``opt_state`` with every leaf shaped like a kernel of ``where`` (a kernel-structured bool tree) set to
    0 where it is True. A leaf belongs to a kernel when its path ends in ``prefix + the kernel's keys``
    (the optimizer's trees mirror the trained dict, ``{"weights": ..., "bn": ...}``), whatever the
    optimizer: momentum, Adam's mu and nu, any other moment."""
    targets = {prefix + k: v for k, v in traverse_util.flatten_dict(where).items()}

    def zero(path, leaf):
        names = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
        for suffix, grown in targets.items():
            if names[-len(suffix):] == suffix and getattr(leaf, "shape", None) == grown.shape:
                return jnp.where(grown, jnp.zeros_like(leaf), leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(zero, opt_state)


def grow_scores(algorithm: str, key: jax.Array, masks: PyTree, kernel_grads: PyTree) -> PyTree:
    """SET: uniform random scores (one key per layer, by the layers' sorted names); RigL: |dense gradient|."""
    if algorithm == "rigl":
        return jax.tree.map(jnp.abs, kernel_grads)
    if algorithm == "set":
        named = by_name(masks)
        return from_names({n: jax.random.uniform(jax.random.fold_in(key, i), m.shape)
                           for i, (n, m) in enumerate(named.items())})
    raise ValueError(f"unknown dynamic sparse training algorithm {algorithm!r}; choose one of {ALGORITHMS}")


def remask(weights: PyTree, masks: PyTree) -> PyTree:
    """``weights`` with every kernel entry outside its mask set to exactly +0."""
    kept = jax.tree.map(lambda k, m: jnp.where(m > 0, k, jnp.zeros_like(k)), kernels(weights), masks)
    return with_kernels(weights, kept)


def mask_update(weights: PyTree, masks: PyTree, opt_state: PyTree, kernel_grads: PyTree, alpha, key: jax.Array,
                algorithm: str) -> tuple[PyTree, PyTree, PyTree]:
    """One SET / RigL update of every layer at drop fraction ``alpha``: (weights, masks, opt_state).

    ``weights``: the full weights tree (kernels and biases); ``masks`` and ``kernel_grads``:
    kernel-structured (``kernel_grads``: dL/d(effective kernel), used by RigL only); ``opt_state``:
    the optimizer state of the trained dict ``{"weights": ..., ...}``.
    """
    scores = grow_scores(algorithm, key, masks, kernel_grads)
    pairs = jax.tree.map(lambda m, w, g: update_layer_mask(m, w, g, alpha), masks, kernels(weights), scores)
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    new_bool = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
    grown = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
    new_masks = jax.tree.map(lambda b, m: b.astype(m.dtype), new_bool, masks)
    # dropped weights -> 0 (remask); grown ones were pruned, so already 0 -- written anyway
    kept_weights = remask(weights, new_masks)
    zeroed = jax.tree.map(lambda k, g: jnp.where(g, jnp.zeros_like(k), k), kernels(kept_weights), grown)
    return with_kernels(kept_weights, zeroed), new_masks, zero_state_at(opt_state, grown)
