"""Setting up a run (data, model, trainer) and resumable training segments.

A run trains one or more segments (an IMP round is one; a dense run or an edge-popup level has
one), each checkpointed by ``Position`` so that an interrupted run resumes bit for bit.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax

from jsnn import data as jdata
from jsnn.checkpoint import Checkpointer
from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.runs.workdir import CHECKPOINTS
from jsnn.trainer import Trainer, TrainState, checkpoint_tree, from_checkpoint_tree, save_checkpoint


def build_trainer(config: TrainConfig) -> Trainer:
    """Loads the data and builds the model and the trainer of ``config``."""
    dataset = jdata.load_dataset(config.dataset, config.data_dir, frames=config.frame_settings())
    return Trainer(config, build_model(config, dataset.num_classes), dataset)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training stands: ``segment`` (the IMP round; 0 for one-segment runs), the epochs done
    in it, and the batches done in the epoch after those."""

    segment: int = 0
    epoch: int = 0
    batch: int = 0


class RunCheckpoints:
    """One run's checkpoints in WORKDIR/checkpoints: the training state, what the method needs
    besides it (``extra``, e.g. IMP's rewind point) and bookkeeping, addressed by Position."""

    def __init__(self, trainer: Trainer, workdir: str, signature: dict,
                 around_save: Callable[[bool, Position], None] | None = None, background: bool | None = None):
        """``background``: ``Checkpointer``'s (None: writes go on in the background off the CPU backend)."""
        cfg = trainer.config
        self.checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINTS), cfg.keep_checkpoints, background)
        self.signature, self.epochs, self.steps = signature, cfg.epochs, trainer.steps_per_epoch
        self.around_save = around_save  # called with (True, position) before a save, (False, position) after

    @property
    def directory(self) -> str:
        return self.checkpointer.directory

    def step_id(self, p: Position) -> int:
        """Orbax's step number: increases with the position (a segment's start follows the
        previous segment's end, hence the + 1)."""
        return p.segment * (self.epochs * self.steps + 1) + p.epoch * self.steps + p.batch

    def save(self, position: Position, state: TrainState, extra: dict, info: dict) -> None:
        meta = {**info, "position": dataclasses.asdict(position), "signature": self.signature}
        if self.around_save:
            self.around_save(True, position)
        save_checkpoint(self.checkpointer, self.step_id(position), state, extra, meta)
        if self.around_save:
            self.around_save(False, position)

    def wait(self) -> None:
        """Returns once the last save's files are written (saves return before: ``Checkpointer.save``)."""
        self.checkpointer.wait()

    def restore(self, state: TrainState, extra_like: Callable[[dict], dict] = lambda meta: {}):
        """(state, extra, position, meta) from the newest checkpoint, or None when there is none.
        ``extra_like(meta)`` gives the structure of the extras that checkpoint holds."""
        if self.checkpointer.latest_step() is None:
            return None
        tree, meta = self.checkpointer.restore(lambda meta: checkpoint_tree(state, extra_like(meta)),
                                               self.signature)
        restored = jax.device_put(from_checkpoint_tree(tree, state), jax.tree.map(lambda x: x.sharding, state))
        return restored, tree["extra"], Position(**meta["position"]), meta


def train_segment(trainer: Trainer, checkpoints: RunCheckpoints, state: TrainState, rule, start: Position,
                  optimizer=None, *,
                  partial_epoch: dict | None = None, extra: Callable[[], dict] = dict,
                  info: Callable[[], dict] = dict, label: dict | None = None, metrics_path: str | None = None,
                  on_epoch_end: Callable[[TrainState, int], bool | None] | None = None,
                  on_batch: Callable[[int, int], None] | None = None,
                  learning_rate: Callable[[int], float] | None = None) -> TrainState:
    """Trains segment ``start.segment`` from ``start`` to its end (or until ``on_epoch_end`` says
    stop), checkpointing as the config says and when a stop signal arrives (each write overlapping the next
    epoch's steps, all written when it returns or raises). Segment k sees the
    batch orders of epochs k*epochs ..., so every IMP round sees new data orders; ``extra()`` and
    ``info()`` give what each checkpoint stores besides the state; ``optimizer`` is the one the state steps
    with (None: the TrainConfig's) and ``learning_rate`` its schedule, for the log (None: the TrainConfig's)."""
    cfg = trainer.config

    def save(state, epoch, batch, partial):
        checkpoints.save(Position(start.segment, epoch, batch), state, extra(),
                         {**info(), "partial_epoch": partial})

    try:
        return trainer.train_epochs(state, rule, start.epoch, start_batch=start.batch, partial_epoch=partial_epoch,
                                    data_seed=cfg.seed, epoch_offset=start.segment * cfg.epochs, label=label,
                                    metrics_path=metrics_path, on_epoch_end=on_epoch_end, save=save,
                                    on_batch=on_batch, optimizer=optimizer, learning_rate=learning_rate)
    finally:  # the segment's checkpoints are on disk when it ends, whichever way (a stop request: before exit)
        checkpoints.wait()


def describe(position: Position, epochs: int) -> str:
    return f"epoch {position.epoch}/{epochs}" + (f", batch {position.batch}" if position.batch else "")
