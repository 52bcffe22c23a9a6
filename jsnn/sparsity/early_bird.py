"""The early-bird stopping rule (You et al., ICLR 2020; applied to SNNs by Kim et al., ECCV 2022).

After each epoch, take the mask pruning would give now and its normalised
Hamming distance to the masks of the previous epochs. Once the newest mask
lies within ``threshold`` of each of the ``window - 1`` before it, the
ticket has emerged: the round can stop and draw it (``jsnn.runs.early_bird``
runs the rule inside an IMP round). Defaults as You et al.'s
code: a queue of 5 masks, distance threshold 0.1.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

PyTree = Any

WINDOW = 5  # You et al.: masks of the last 5 epochs
THRESHOLD = 0.1  # You et al.: every distance in the window below 0.1


def _flat(masks: PyTree) -> np.ndarray:
    return np.concatenate([np.asarray(m).reshape(-1) != 0 for m in jax.tree.leaves(masks)])


def mask_distance(a: PyTree, b: PyTree, live: PyTree | None = None) -> float:
    """Normalised Hamming distance: the fraction of entries where masks ``a`` and ``b`` differ.

    With ``live`` only its non-zero entries count (IMP: the weights still in play this round; the
    ones pruned earlier agree in every candidate mask and would only dilute the distance).
    """
    x, y = _flat(a), _flat(b)
    if x.shape != y.shape:
        raise ValueError(f"masks of different sizes: {x.size} and {y.size} entries")
    if live is not None:
        keep = _flat(live)
        x, y = x[keep], y[keep]
    if x.size == 0:
        return 0.0
    return float(np.count_nonzero(x != y)) / x.size


@dataclasses.dataclass
class EarlyBirdRule:
    """The stopping rule: ``update(mask)`` after each epoch returns True once the ticket has emerged.

    ``distances`` holds the newest mask's distances to the earlier masks in the window (oldest first),
    as You et al.'s ``cal_dist``; the rule fires when the window is full and their maximum is below
    ``threshold``.
    """

    window: int = WINDOW
    threshold: float = THRESHOLD
    live: PyTree | None = None
    masks: list = dataclasses.field(default_factory=list)
    distances: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"the early-bird window must hold at least 2 epochs' masks, got {self.window}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"the early-bird distance threshold must lie in (0, 1), got {self.threshold}")

    def update(self, mask: PyTree) -> bool:
        self.masks = (self.masks + [mask])[-self.window:]
        self.distances = [mask_distance(mask, old, self.live) for old in self.masks[:-1]]
        return self.emerged

    @property
    def emerged(self) -> bool:
        return len(self.masks) == self.window and max(self.distances) < self.threshold
