"""Setting up a run: workdir files, dataset, model, and one resumable training segment.

The programs in ``train/`` are thin: they parse flags into a TrainConfig and
call ``edge_popup_sweep.run`` or ``imp.run``, which build on these pieces.
"""
from __future__ import annotations

import dataclasses
import os

import jax

from jsnn import data as jdata
from jsnn.checkpoint import Checkpointer
from jsnn.config import TrainConfig
from jsnn.metrics import log, read_jsonl, write_json, write_jsonl
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


def prepare(config: TrainConfig, workdir: str, extra_config: dict | None = None):
    """Loads data, builds the model and trainer, writes WORKDIR/config.json."""
    dataset = jdata.load_dataset(config.dataset, config.data_dir)  # first: missing data leaves no empty workdir
    os.makedirs(workdir, exist_ok=True)
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, CONFIG), {**dataclasses.asdict(config), **(extra_config or {}),
                                                   "devices": jax.device_count()})
    return dataset, model, trainer


def signature(config: TrainConfig, method: str) -> dict:
    """What must match for a checkpoint to be resumed by this run."""
    return {"method": method, "dataset": config.dataset, "model": config.model, "timesteps": config.timesteps,
            "seed": config.seed, "epochs": config.epochs, "batch_size": config.batch_size}


def drop_metrics_after(path: str, keep) -> None:
    """Removes records a crashed run wrote after its last checkpoint (they are redone)."""
    records = read_jsonl(path)
    kept = [r for r in records if keep(r)]
    if len(kept) != len(records):
        write_jsonl(path, kept)


def train_resumable(trainer: Trainer, workdir: str, state: TrainState, method, sig: dict,
                    label: dict | None = None) -> TrainState:
    """Trains one segment of ``config.epochs`` epochs in ``workdir``, resuming from its
    latest checkpoint if there is one, checkpointing every ``checkpoint_every`` epochs."""
    cfg = trainer.config
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINTS), cfg.keep_checkpoints)
    start = 0
    if ckpt.latest_step() is not None:
        tree, meta = ckpt.restore(checkpoint_tree(state), sig)
        state = jax.device_put(from_checkpoint_tree(tree, state), jax.tree.map(lambda x: x.sharding, state))
        start = int(meta["epoch"])
        log(f"resuming from {ckpt.directory} at epoch {start}/{cfg.epochs}")
    metrics_path = os.path.join(workdir, METRICS)
    drop_metrics_after(metrics_path, lambda r: r["epoch"] <= start)

    def on_epoch_end(state, done):
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            save_checkpoint(ckpt, done, state, {}, {"epoch": done, "signature": sig})

    return trainer.train_epochs(state, method, start, data_seed=cfg.seed, label=label,
                                metrics_path=metrics_path, on_epoch_end=on_epoch_end)
