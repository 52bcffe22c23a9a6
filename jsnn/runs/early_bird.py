"""Early-bird search: the collaborator that ends an IMP round once its ticket has emerged.

After each epoch of a round (round 0: from its rewind point on) it takes the mask pruning would
give now and feeds it to the stopping rule (``jsnn.sparsity.early_bird.EarlyBirdRule``, You et
al. 2020); once the rule fires, the round ends there and is pruned. The round's last masks and
a log (epochs run, distances, seconds spent) go into every checkpoint, so a resumed round
decides exactly as an uninterrupted one; the log goes into the round's results entry.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.metrics import log
from jsnn.sparsity.early_bird import EarlyBirdRule
from jsnn.variables import map_with_names

PyTree = Any


def ones_for(masks, layers):
    """``masks`` with the named layers all ones: their pruned weights may compete again (DNS)."""
    return map_with_names(lambda name, m: jnp.ones_like(m) if name in layers else m, masks)


class EarlyBirdSearch:
    """``candidate_masks(state, next_round)`` gives the masks pruning the state would give."""

    def __init__(self, window: int, threshold: float, revivable: tuple[str, ...], epochs: int,
                 candidate_masks: Callable[[Any, int], PyTree]):
        self.window, self.threshold, self.revivable, self.epochs = window, threshold, revivable, epochs
        self.candidate_masks = candidate_masks
        self.rule: EarlyBirdRule | None = None  # the round in progress's stopping rule
        self.log: dict[str, dict] = {}  # per round: epochs run, distances, seconds spent on them

    def _new_rule(self, state) -> EarlyBirdRule:
        """Distances over the weights still in play (DNS layers: all)."""
        live = jax.tree.map(np.array, ones_for(state.masks, self.revivable))
        return EarlyBirdRule(self.window, self.threshold, live)

    def begin_round(self, state, start, searching: bool) -> bool:
        """Before training round ``start.segment`` from ``start``; True if the rule had already ended
        it there (a run resumed at that point). ``searching`` is False for the last round."""
        key = str(start.segment)
        if not searching:
            self.rule = None
            return False
        if self.log.get(key, {}).get("early_bird_stopped") and start.batch == 0 \
                and start.epoch == self.log[key]["epochs_run"]:
            return True
        if self.rule is None or (start.epoch == 0 and start.batch == 0):
            self.rule = self._new_rule(state)
            self.log.pop(key, None)
        return False

    def on_epoch_end(self, state, round_index: int, done: int) -> bool:
        """After epoch ``done`` of ``round_index``: True once the mask it would prune to has settled."""
        t0 = time.perf_counter()
        mask = jax.tree.map(np.array, self.candidate_masks(state, round_index + 1))
        stop = self.rule.update(mask)
        entry = self.log.setdefault(str(round_index), {"early_bird_distances": [], "early_bird_seconds": 0.0})
        entry["early_bird_distances"].append([done, max(self.rule.distances, default=1.0)])
        entry["early_bird_seconds"] += time.perf_counter() - t0
        entry["epochs_run"] = done
        entry["early_bird_stopped"] = bool(stop)
        if stop:
            log(f"round {round_index}: early-bird ticket after epoch {done}/{self.epochs} (distances "
                f"{', '.join(f'{d:.4f}' for d in self.rule.distances)} < {self.rule.threshold})")
        return stop

    def round_entry(self, round_index: int) -> dict:
        return dict(self.log.get(str(round_index), {}))

    # -- checkpointed -------------------------------------------------------------------------
    def checkpoint_extra(self) -> dict:
        if self.rule is not None and self.rule.masks:  # the masks of the round's last epochs
            return {"early_bird": {str(i): m for i, m in enumerate(self.rule.masks)}}
        return {}

    def checkpoint_info(self) -> dict:
        return {"early_bird_queue": len(self.rule.masks) if self.rule is not None else 0,
                "early_bird_log": self.log}

    @staticmethod
    def checkpoint_like(state, meta: dict) -> dict:
        if not meta.get("early_bird_queue"):
            return {}
        masks = jax.tree.map(np.array, state.masks)
        return {"early_bird": {str(i): masks for i in range(meta["early_bird_queue"])}}

    def restore(self, state, extra: dict, meta: dict) -> None:
        self.log = meta.get("early_bird_log", {})
        queue = extra.get("early_bird", {})
        self.rule = self._new_rule(state)
        self.rule.masks = [queue[str(i)] for i in range(len(queue))]
