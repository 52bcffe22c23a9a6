"""Plans of two segments, a mask search and then a finetune of the ticket it fixed: the energy method
(jsnn/runs/energy.py) and Shi et al.'s (jsnn/runs/shi.py). A subclass sets ``self.search`` in ``setup`` and
writes what differs: its masks' optimizer, the line logged after each search epoch, what follows the finetune
and its results entry. Segment 0's ticket is round 0's file, segment 1's the run's ticket.npz; one weights'
schedule spans both segments (the finetune goes on with the search's optimizer and its decay)."""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import optax

from jsnn import parallel
from jsnn.config import TrainConfig
from jsnn.runs.run import Plan, Run
from jsnn.runs.segment import Position
from jsnn.runs.sparse_training import OPTIMIZERS, shared_optimizer
from jsnn.runs.tickets import TICKET_FILE, round_path
from jsnn.sparsity.dynamic import remask, zero_state_at
from jsnn.trainer import TrainState, learning_rate_schedule

SEGMENTS = ("search", "finetune")


def check_search_options(options, config) -> None:
    """The checks the two methods' options share (after their presets are filled in): the finetune's epochs,
    the sigmoid temperatures and the weights' optimizer."""
    if not 0 <= options.finetune_epochs <= config.epochs:
        raise ValueError(f"--finetune-epochs must lie in [0, --epochs = {config.epochs}], "
                         f"got {options.finetune_epochs}")
    if not 0 < options.beta0 <= options.beta1:
        raise ValueError(f"the temperatures must satisfy 0 < beta0 <= beta1, got {options.beta0}, {options.beta1}")
    if options.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {options.optimizer!r}")


def switch_state(state: TrainState, masks, mesh) -> TrainState:
    """``state`` on binary ``masks`` (replicated on ``mesh``): pruned weights stored as exactly 0 and their
    optimizer moments 0, so the finetune's masked updates keep them 0 under any optimizer."""
    host = jax.device_get(state)
    masks = jax.tree.map(lambda m, old: np.asarray(m, np.asarray(old).dtype), masks, host.masks)
    pruned = jax.tree.map(lambda m: np.asarray(m) == 0, masks)
    host = host.replace(masks=masks, weights=remask(host.weights, masks),
                        opt_state=zero_state_at(host.opt_state, pruned))
    return parallel.put_replicated(mesh, jax.tree.map(np.asarray, host))


class SearchThenFinetune(Plan):
    """Search (segment 0), then finetune (segment 1); segment k's entry is round k. ``options`` has
    ``optimizer`` (the weights') and ``finetune_epochs``."""

    segments = 2

    def __init__(self, config, options, finetune_rule):
        super().__init__(config, options.resolve(config))
        self.segment = 0
        self.search = None  # the search's training rule, built by setup (it needs the model's layers)
        self.finetune = finetune_rule

    def mask_optimizer(self, weights: optax.GradientTransformation) -> optax.GradientTransformation:
        """The whole optimizer: the weights' ``weights`` with the masks' own (one object per setting)."""
        raise NotImplementedError

    def whole_run(self) -> TrainConfig:
        """The config whose schedule the weights' optimizer follows: search and finetune together."""
        return dataclasses.replace(self.config, epochs=self.config.epochs + self.options.finetune_epochs)

    def optimizer(self, trainer) -> optax.GradientTransformation:
        weights = shared_optimizer(self.options.optimizer, self.whole_run(), trainer.steps_per_epoch)
        return self.mask_optimizer(weights)

    def learning_rate(self, trainer) -> optax.Schedule:
        return learning_rate_schedule(self.whole_run(), trainer.steps_per_epoch)

    def current_rule(self):
        return self.search if self.segment == 0 else self.finetune

    def restore(self, run: Run, state: TrainState, extra: dict, meta: dict) -> None:
        self.segment = meta["position"]["segment"]

    def search_epoch_end(self, state: TrainState, done: int) -> None:
        """Called after each search epoch (a log line); returns nothing, so the search runs its epochs."""

    def after_finetune(self, run: Run, state: TrainState) -> TrainState:
        return state

    def train(self, run: Run, state: TrainState, start: Position, partial_epoch: dict | None) -> TrainState:
        self.segment = start.segment
        if start.segment == 0:
            return run.train_segment(state, start, partial_epoch, on_epoch_end=self.search_epoch_end)
        if start.epoch < self.options.finetune_epochs:
            state = run.train_segment(state, start, partial_epoch,
                                      on_epoch_end=lambda s, done: done >= self.options.finetune_epochs)
        return self.after_finetune(run, state)

    def segment_epochs(self, segment: int) -> int:
        return self.config.epochs if segment == 0 else self.options.finetune_epochs

    def ticket_path(self, run: Run, segment: int) -> str:
        return round_path(run.workdir, 0) if segment == 0 else os.path.join(run.workdir, TICKET_FILE)
