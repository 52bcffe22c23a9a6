"""Setting up a run: workdir files, dataset, model, and one resumable training segment.

The programs in ``train/`` are thin: they parse flags into a TrainConfig and
call ``edge_popup_sweep.run`` or ``imp.run``, which build on these pieces.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax

from jsnn import data as jdata
from jsnn.checkpoint import Checkpointer
from jsnn.config import TrainConfig, signature_differences
from jsnn.metrics import log, read_json, read_jsonl, write_json, write_jsonl
from jsnn.models import get_model
from jsnn.neuron import LIFConfig
from jsnn.layers import BNConfig
from jsnn.surrogate import Surrogate
from jsnn.trainer import TrainState, Trainer, checkpoint_tree, from_checkpoint_tree, save_checkpoint

METRICS, CONFIG, RESULTS, CHECKPOINTS = "metrics.jsonl", "config.json", "results.json", "checkpoints"


def build_model(config: TrainConfig, num_classes: int):
    lif = LIFConfig(decay=config.decay, threshold=config.threshold, reset=config.reset,
                    detach_reset=config.detach_reset, surrogate=Surrogate(config.surrogate, config.surrogate_width),
                    remat=config.remat)
    return get_model(config.model, num_classes, timesteps=config.timesteps, lif=lif,
                     bn=BNConfig(affine=config.bn_affine), weight_init=config.weight_init,
                     width=config.width)


class RunMismatchError(ValueError):
    """A workdir, checkpoint or finished result written with other settings than this run's."""


def run_signature(method: str, config: TrainConfig, options=None, **more) -> dict:
    """Every resolved setting that can change a run's results: the config, the method's options
    (less their ``RUN_CONTROL`` fields, e.g. IMP's round count, which a resumed run may extend) and
    ``more``; as JSON would store it, so a signature read back compares equal."""
    sig = {"method": method, **config.signature()}
    if options is not None:
        skip = getattr(options, "RUN_CONTROL", ())
        sig.update({k: v for k, v in dataclasses.asdict(options).items() if k not in skip})
    sig.update(more)
    return json.loads(json.dumps(sig))


def check_same_run(found: dict | None, signature: dict, where: str, keys=None) -> None:
    """Raises RunMismatchError naming every differing setting (old -> new) and what to do."""
    diffs = [] if found is None else signature_differences(found, signature, keys)
    if diffs:
        raise RunMismatchError(
            f"{where} holds a run with other settings ({'; '.join(diffs)}). Nothing was changed. "
            "Rerun with its settings to resume it or read its results, or pass a new --workdir."
        )


def claim_workdir(workdir: str, signature: dict, record: dict) -> None:
    """Makes WORKDIR this run's: a new directory gets config.json (``record`` and the signature);
    one written by a run with other settings is a RunMismatchError, and nothing is written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file, not a directory; pass a directory for the run's files")
    found = read_json(os.path.join(workdir, CONFIG))
    check_same_run(found.get("signature") if found else None, signature, workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --workdir {workdir} ({e.strerror}); pass a writable directory") from None
    if found is None or "signature" not in found:
        write_json(os.path.join(workdir, CONFIG), {**record, "signature": signature})


def prepare(config: TrainConfig, workdir: str, signature: dict, extra_config: dict | None = None):
    """Loads data, builds the model and trainer, claims WORKDIR (config.json, see claim_workdir)."""
    dataset = jdata.load_dataset(config.dataset, config.data_dir)  # first: missing data leaves no empty workdir
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    claim_workdir(workdir, signature, {**dataclasses.asdict(config), **(extra_config or {}),
                                       "devices": jax.device_count(), "processes": jax.process_count()})
    return dataset, model, trainer


def drop_metrics_after(path: str, keep) -> None:
    """Removes records a crashed run wrote after its last checkpoint (they are redone), and a
    last line it left cut short."""
    records = read_jsonl(path)
    kept = [r for r in records if keep(r)]
    cut_short = os.path.exists(path) and os.path.getsize(path) and not open(path, "rb").read().endswith(b"\n")
    if len(kept) != len(records) or cut_short:
        write_jsonl(path, kept)


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

    def __init__(self, trainer: Trainer, workdir: str, signature: dict):
        cfg = trainer.config
        self.checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINTS), cfg.keep_checkpoints)
        self.signature, self.epochs, self.steps = signature, cfg.epochs, trainer.steps_per_epoch

    @property
    def directory(self) -> str:
        return self.checkpointer.directory

    def step_id(self, p: Position) -> int:
        """Orbax's step number: increases with the position (a segment's start follows the
        previous segment's end, hence the + 1)."""
        return p.segment * (self.epochs * self.steps + 1) + p.epoch * self.steps + p.batch

    def save(self, position: Position, state: TrainState, extra: dict, info: dict) -> None:
        meta = {**info, "position": dataclasses.asdict(position), "signature": self.signature}
        save_checkpoint(self.checkpointer, self.step_id(position), state, extra, meta)

    def restore(self, state: TrainState, extra_like: Callable[[dict], dict] = lambda meta: {}):
        """(state, extra, position, meta) from the newest checkpoint, or None when there is none.
        ``extra_like(meta)`` gives the structure of the extras that checkpoint holds."""
        if self.checkpointer.latest_step() is None:
            return None
        tree, meta = self.checkpointer.restore(lambda meta: checkpoint_tree(state, extra_like(meta)),
                                               self.signature)
        restored = jax.device_put(from_checkpoint_tree(tree, state), jax.tree.map(lambda x: x.sharding, state))
        return restored, tree["extra"], Position(**meta["position"]), meta


def train_segment(trainer: Trainer, checkpoints: RunCheckpoints, state: TrainState, method, start: Position, *,
                  partial_epoch: dict | None = None, extra: Callable[[], dict] = dict,
                  info: Callable[[], dict] = dict, label: dict | None = None, metrics_path: str | None = None,
                  on_epoch_end: Callable[[TrainState, int], bool | None] | None = None) -> TrainState:
    """Trains segment ``start.segment`` from ``start`` to its end (or until ``on_epoch_end`` says
    stop), checkpointing as the config says and when a stop signal arrives. Segment k sees the
    batch orders of epochs k*epochs ..., so every IMP round sees new data orders; ``extra()`` and
    ``info()`` give what each checkpoint stores besides the state."""
    cfg = trainer.config

    def save(state, epoch, batch, partial):
        checkpoints.save(Position(start.segment, epoch, batch), state, extra(),
                         {**info(), "partial_epoch": partial})

    return trainer.train_epochs(state, method, start.epoch, start_batch=start.batch, partial_epoch=partial_epoch,
                                data_seed=cfg.seed, epoch_offset=start.segment * cfg.epochs, label=label,
                                metrics_path=metrics_path, on_epoch_end=on_epoch_end, save=save)


def describe(position: Position, epochs: int) -> str:
    return f"epoch {position.epoch}/{epochs}" + (f", batch {position.batch}" if position.batch else "")


def train_resumable(trainer: Trainer, workdir: str, state: TrainState, method, sig: dict,
                    label: dict | None = None) -> TrainState:
    """Trains one segment of ``config.epochs`` epochs in ``workdir``, resuming from its newest
    checkpoint if there is one."""
    checkpoints = RunCheckpoints(trainer, workdir, sig)
    start, partial = Position(), None
    resumed = checkpoints.restore(state)
    if resumed is not None:
        state, _, start, meta = resumed
        partial = meta.get("partial_epoch")
        log(f"resuming from {checkpoints.directory} at {describe(start, trainer.config.epochs)}")
    metrics_path = os.path.join(workdir, METRICS)
    drop_metrics_after(metrics_path, lambda r: r["epoch"] <= start.epoch)
    return train_segment(trainer, checkpoints, state, method, start, partial_epoch=partial, label=label,
                         metrics_path=metrics_path)
