"""Sparsity distributions: how many weights each layer keeps, apart from which ones (the criterion's job).

After jaxpruner's ``sparsity_distributions.py``: a distribution maps a target
density (the fraction KEPT, ``1 - sparsity``) to per-layer kept counts; the
criterion's scores then choose the weights inside each layer. Any criterion
works with any distribution.

    uniform   every layer at the target density
    erk       Erdős–Rényi-Kernel (Evci et al. 2020, RigL): layer density proportional to
              (sum of the kernel's dimensions) / (their product), scaled so the layers
              keep the target total; a layer whose density would pass 1 is made dense
              and the others are rescaled to make up for it (RigL's dense-layer handling)
    global    one ranking over every layer by the criterion's scores (Kim et al.'s IMP)
    matched   each layer keeps what global *magnitude* ranking would leave it; the criterion
              picks which weights inside the layer (the SF default: the only change against IMP is which weights go)

``uniform`` and ``erk`` depend on the layer shapes only, so edge-popup takes its
per-layer targets from ``layer_targets``; ``global`` and ``matched`` need
scores and serve IMP through ``prune``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

from jsnn.sparsity import masks as M
from jsnn.sparsity import patterns
from jsnn.variables import by_name, from_names

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Distribution:
    name: str
    counts: Callable  # (scores, live masks, density, magnitudes) -> {layer path: weights kept}
    # (same arguments) -> the unstructured masks that the per-layer prune at ``counts`` gives, where the
    # distribution has them at hand; None (or a None return) where it has not
    masks: Callable | None = None


DISTRIBUTIONS: dict[str, Distribution] = {}


def register_distribution(name: str, masks: Callable | None = None):
    def wrap(fn):
        DISTRIBUTIONS[name] = Distribution(name, fn, masks)
        return fn

    return wrap


def get_distribution(name: str) -> Distribution:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown sparsity distribution {name!r}; choose one of {sorted(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]


# -- densities from shapes ---------------------------------------------------------------------------------


def uniform_densities(shapes: dict[str, tuple], density: float, dense=()) -> dict[str, float]:
    return {n: 1.0 if n in dense else float(density) for n in shapes}


def erk_densities(shapes: dict[str, tuple], density: float, dense=(), power: float = 1.0) -> dict[str, float]:
    """Per-layer densities of ERK at overall ``density`` over the layers not in ``dense``.

    Raw density of a layer with kernel shape (k_h, k_w, c_in, c_out): (k_h + k_w + c_in + c_out) /
    (k_h k_w c_in c_out), a linear layer (c_in, c_out): (c_in + c_out) / (c_in c_out) (Evci et al.:
    the kernel dimensions count too); raised to ``power`` (1: ERK as published). With N_l weights per
    layer and D the layers already made dense, eps solves
        eps * sum_{l not in D} p_l N_l + sum_{l in D} N_l = density * sum_l N_l,
    and any layer with eps p_l > 1 joins D (largest p first) until none does. Layers in ``dense`` are
    left out of the computation and kept whole, as jaxpruner's custom sparsity map.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    sizes = {n: math.prod(s) for n, s in shapes.items() if n not in dense}
    if not sizes:
        raise ValueError("ERK needs at least one layer that is not kept dense")
    raw = {n: (sum(shapes[n]) / sizes[n]) ** power for n in sizes}
    made_dense: set[str] = set()
    while True:
        free = [n for n in sizes if n not in made_dense]
        rhs = density * sum(sizes.values()) - sum(sizes[n] for n in made_dense)
        eps = rhs / sum(raw[n] * sizes[n] for n in free)
        top = max(raw[n] for n in free)
        if eps * top <= 1.0 or len(free) == 1:
            break
        made_dense |= {n for n in free if raw[n] == top}
    out = {n: 1.0 for n in shapes}
    out.update({n: 1.0 if n in made_dense else min(1.0, eps * raw[n]) for n in sizes})
    return out


# the distributions whose per-layer densities follow from the layer shapes alone (what edge-popup can use)
SHAPE_DENSITIES = {"uniform": uniform_densities, "erk": erk_densities}


def layer_targets(name: str, shapes: dict[str, tuple], sparsity: float, dense=()) -> dict[str, float]:
    """Per-layer fraction REMOVED for a shape-only distribution (edge-popup's targets)."""
    M.check_sparsity(sparsity)
    if name not in SHAPE_DENSITIES:
        raise ValueError(f"distribution {name!r} needs scores; per-layer targets from shapes alone come from "
                         f"{sorted(SHAPE_DENSITIES)}")
    return {n: 1.0 - d for n, d in SHAPE_DENSITIES[name](shapes, 1.0 - sparsity, dense).items()}


def _shapes(masks: PyTree) -> dict[str, tuple]:
    return {n: tuple(m.shape) for n, m in by_name(masks).items()}


def _from_densities(densities: dict[str, float], masks: PyTree) -> dict[str, int]:
    return {n: max(1, int(round(densities[n] * m.size))) for n, m in by_name(masks).items()}


# -- the registered distributions ----------------------------------------------------------------------


@register_distribution("uniform")
def uniform(scores, masks, density: float, magnitudes=None) -> dict[str, int]:
    return _from_densities(uniform_densities(_shapes(masks), density), masks)


@register_distribution("erk")
def erk(scores, masks, density: float, magnitudes=None) -> dict[str, int]:
    return _from_densities(erk_densities(_shapes(masks), density), masks)


def keep_total(masks: PyTree, density: float) -> int:
    """round(total * density): counting from the total keeps IMP round k within 0.5 / total of its target."""
    return int(round(M.count_kept(masks)[1] * density))


def global_ranking_masks(scores, masks, density: float, magnitudes=None) -> PyTree | None:
    """The global ranking's own masks: within each layer they keep its highest-scored live weights (ties: the
    later index), which is what the per-layer prune at the ranking's counts keeps, so a round need not compile
    and run that prune too. None where the ranking kept a pruned weight (more kept than live, or live
    weights scored -inf), where that prune would keep fewer."""
    kept = M.prune_global(scores, masks, keep_total(masks, density))
    if all(np.all(np.asarray(k) <= np.asarray(m)) for k, m in zip(jax.tree.leaves(kept), jax.tree.leaves(masks))):
        return kept
    return None


@register_distribution("global", masks=global_ranking_masks)
def global_ranking(scores, masks, density: float, magnitudes=None) -> dict[str, int]:
    return by_name(M.layer_keep_counts(M.prune_global(scores, masks, keep_total(masks, density))))


@register_distribution("matched")
def matched(scores, masks, density: float, magnitudes=None) -> dict[str, int]:
    if magnitudes is None:
        raise ValueError("the matched distribution needs the weight magnitudes")
    return by_name(M.layer_keep_counts(M.prune_global(magnitudes, masks, keep_total(masks, density))))


def prune(name: str, scores: PyTree, masks: PyTree, density: float, magnitudes: PyTree | None = None,
          sparsity_type: str = patterns.UNSTRUCTURED) -> PyTree:
    """New masks at overall ``density``: the distribution sets each layer's count, the scores pick within it.

    ``masks`` are the live weights (already-pruned ones cannot come back); a layer never keeps more
    than it has live. ``sparsity_type`` (``patterns.py``) is the pattern each layer's kept weights
    form: channel rounds each layer's count to whole channels, N:M keeps n of every m whatever the count.
    """
    distribution = get_distribution(name)
    if sparsity_type == patterns.UNSTRUCTURED and distribution.masks is not None:
        kept = distribution.masks(scores, masks, density, magnitudes)
        if kept is not None:
            return kept
    if patterns.fixed_density(sparsity_type) is not None:  # N:M: the distribution's counts do not enter
        counts = {n: m.size for n, m in by_name(masks).items()}
    else:
        counts = distribution.counts(scores, masks, density, magnitudes)
    live = by_name(M.layer_keep_counts(masks))
    counts = {n: min(int(c), live[n]) for n, c in counts.items()}
    if sparsity_type == patterns.UNSTRUCTURED:
        return M.prune_per_layer(scores, masks, from_names(counts))
    return patterns.prune_per_layer(sparsity_type, scores, masks, counts)
