"""Iterative magnitude pruning with rewinding (Frankle & Carbin; Kim et al.), SF-IMP-1 and SF-IMP-2.

Round 0 trains the dense network. Each later round prunes ``prune_rate`` of
the still-unpruned maskable weights (by the criterion, within the scope),
rewinds the surviving weights, BN scale/bias and running statistics to the
rewind point, and trains again with a fresh optimizer (SPEC §4-5).

Every round is resumable: checkpoint step ``round * (epochs + 1) + epoch``
holds the training state, the masks and the rewind point; rerunning the
same command continues from the newest one.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jsnn import plots
from jsnn.checkpoint import Checkpointer
from jsnn.config import TrainConfig, dataset_family
from jsnn.methods import MaskedTraining
from jsnn.metrics import log, read_json, read_jsonl, write_json
from jsnn.run import CHECKPOINTS, METRICS, RESULTS, drop_metrics_after, prepare, signature
from jsnn.sparsity import masks as M
from jsnn.sparsity.criteria import get_criterion
from jsnn.sparsity.stats import collect_statistics
from jsnn.ticket import record_ticket, round_path
from jsnn.trainer import Trainer, TrainState, checkpoint_tree, from_checkpoint_tree, save_checkpoint
from jsnn.variables import init_variables, kernels, named_kernels, with_kernels

# Kim et al.: 15 rounds counting the dense round 0 (sparsity up to 1 - 0.75^14 = 98.2%),
# 25% per round, late rewinding to epoch 20 of round 0. Digits: a short budget.
REWIND_EPOCH = {"cifar": 20, "digits": 2}
SCOPES = ("global", "layerwise", "matched")


@dataclasses.dataclass(frozen=True)
class IMPOptions:
    rounds: int = 15  # counting the dense round 0
    prune_rate: float = 0.25  # fraction of the remaining weights pruned each round
    rewind_epoch: int | None = None  # None: 20 for CIFAR (Kim et al.), 2 for digits; 0 = initialisation
    criterion: str = "magnitude"  # magnitude | sf
    scope: str | None = None  # None: global for magnitude (Kim et al.), matched for sf (SPEC §5)
    dns: bool = False  # SF-IMP-2: dynamic network surgery on the encoding and linear layers
    calibration_batches: int = 10  # training batches the SF statistics are collected over (cost < 1% of an epoch)

    def resolve(self, config: TrainConfig) -> "IMPOptions":
        rewind = self.rewind_epoch
        if rewind is None:  # the preset, never past the end of a short round 0
            rewind = min(REWIND_EPOCH.get(dataset_family(config.dataset), 0), config.epochs)
        scope = self.scope or ("matched" if self.criterion == "sf" else "global")
        out = dataclasses.replace(self, rewind_epoch=rewind, scope=scope)
        get_criterion(out.criterion)
        if out.rounds < 1:
            raise ValueError(f"--rounds must be >= 1 (round 0 is the dense network), got {out.rounds}")
        if not 0.0 < out.prune_rate < 1.0:
            raise ValueError(f"--prune-rate is the fraction of remaining weights pruned per round, in (0, 1); "
                             f"got {out.prune_rate}")
        if not 0 <= out.rewind_epoch <= config.epochs:
            raise ValueError(f"--rewind-epoch must lie in [0, epochs = {config.epochs}], got {out.rewind_epoch}")
        if out.scope not in SCOPES:
            raise ValueError(f"--scope must be one of {SCOPES}, got {out.scope!r}")
        if out.calibration_batches < 1:
            raise ValueError(f"--calibration-batches must be >= 1, got {out.calibration_batches}")
        return out


def dns_layers(model, weights) -> tuple[str, ...]:
    """The encoding layer and every linear layer: where SF-IMP-2 applies dynamic network surgery."""
    return tuple(sorted(n for n, k in named_kernels(weights).items() if k.ndim == 2 or n == model.encoding_layer))


def _ones_for(masks, layers):
    """``masks`` with the named layers all ones: their pruned weights may compete again (DNS)."""
    flat = traverse_util.flatten_dict(masks)
    return traverse_util.unflatten_dict(
        {k: (jnp.ones_like(v) if "/".join(k[:-1]) in layers else v) for k, v in flat.items()})


def next_masks(scores, masks, options: IMPOptions, round_index: int, magnitudes, revivable=()):
    """Masks for ``round_index`` (>= 1): prune to round(total * (1 - rate)^round_index) weights.

    ``revivable`` layers (DNS) rank all their weights, pruned ones included.
    """
    ranked_masks = _ones_for(masks, revivable)
    if options.scope == "layerwise":
        keep = jax.tree.map(lambda m: max(1, int(round(m.size * (1 - options.prune_rate) ** round_index))), masks)
        return M.prune_per_layer(scores, ranked_masks, keep)
    keep_total = M.imp_keep_total(M.count_kept(_ones_for(masks, ()))[1], options.prune_rate, round_index)
    if options.scope == "global":
        return M.prune_global(scores, ranked_masks, keep_total)
    # matched: each layer keeps what global magnitude pruning would leave it; the criterion picks which
    by_magnitude = M.prune_global(magnitudes, ranked_masks, keep_total)
    return M.prune_per_layer(scores, ranked_masks, M.layer_keep_counts(by_magnitude))


@dataclasses.dataclass
class IMPRun:
    """One IMP run (one criterion, one seed) in one workdir."""

    config: TrainConfig
    options: IMPOptions
    workdir: str
    trainer: Trainer | None = None

    def __post_init__(self):
        self.options = self.options.resolve(self.config)  # idempotent: presets filled, values checked
        if self.trainer is None:
            _, _, self.trainer = prepare(self.config, self.workdir, {"imp": dataclasses.asdict(self.options)})
        t = self.trainer
        self.model = t.model
        self.variables = init_variables(self.model, jax.random.key(self.config.seed), (1,) + t.dataset.image_shape)
        revivable = dns_layers(self.model, self.variables.weights) if self.options.dns else ()
        self.method = MaskedTraining(dns_layers=revivable)
        self.signature = {**signature(self.config, "imp"), "criterion": self.options.criterion,
                          "scope": self.options.scope, "dns": self.options.dns,
                          "prune_rate": self.options.prune_rate, "rewind_epoch": self.options.rewind_epoch}
        self.ckpt = Checkpointer(os.path.join(self.workdir, CHECKPOINTS), self.config.keep_checkpoints)
        self.metrics_path = os.path.join(self.workdir, METRICS)

    # -- state ------------------------------------------------------------------------------
    def _step_id(self, round_index: int, epoch: int) -> int:
        return round_index * (self.config.epochs + 1) + epoch

    def _rewind_point(self, state: TrainState) -> dict:
        return jax.tree.map(np.array, {"weights": state.weights, "bn": state.bn, "batch_stats": state.batch_stats})

    def _save(self, state, rewind, round_index, epoch, runs):
        meta = {"round": round_index, "epoch": epoch, "runs": runs, "signature": self.signature}
        save_checkpoint(self.ckpt, self._step_id(round_index, epoch), state, {"rewind": rewind}, meta)

    def _restore(self, state):
        like = checkpoint_tree(state, {"rewind": self._rewind_point(state)})
        tree, meta = self.ckpt.restore(like, self.signature)
        restored = from_checkpoint_tree(tree, state)
        restored = jax.device_put(restored, jax.tree.map(lambda x: x.sharding, state))
        return restored, tree["extra"]["rewind"], meta

    # -- the rounds ---------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, opts, t = self.config, self.options, self.trainer
        state = t.new_state(self.variables, {}, self.method, cfg.seed)
        rewind = self._rewind_point(state) if opts.rewind_epoch == 0 else None
        start_round, start_epoch, runs = 0, 0, []
        if self.ckpt.latest_step() is not None:
            state, rewind, meta = self._restore(state)
            start_round, start_epoch, runs = int(meta["round"]), int(meta["epoch"]), meta["runs"]
            rewind = rewind if (start_round > 0 or start_epoch >= opts.rewind_epoch) else None
            log(f"resuming from {self.ckpt.directory}: round {start_round}, epoch {start_epoch}/{cfg.epochs}")
        done_before = lambda r: r.get("round", 0) < start_round or (
            r.get("round") == start_round and r["epoch"] <= start_epoch)
        drop_metrics_after(self.metrics_path, done_before)

        for round_index in range(start_round, opts.rounds):
            state, rewind = self._train_round(state, rewind, round_index, start_epoch if round_index == start_round else 0, runs)
            entry = {"round": round_index, "sparsity": t.sparsity(state, self.method),
                     "sparsity_target": 1.0 - (1.0 - opts.prune_rate) ** round_index,
                     "layer_sparsity": M.layer_sparsity(state.masks), **t.evaluate(state, self.method)}
            entry = record_ticket(round_path(self.workdir, round_index), cfg, t.dataset.num_classes, state,
                                  self.method, entry)
            runs = [r for r in runs if r["round"] != round_index] + [entry]
            self._write_results(runs)
            log(f"round {round_index}: sparsity {entry['sparsity']:.4f} test accuracy {entry['test_accuracy']:.4f}")
            if round_index + 1 < opts.rounds:
                state = self.prune_and_rewind(state, rewind, round_index + 1)
                self._save(state, rewind, round_index + 1, 0, runs)
        return self._write_results(runs)

    def _train_round(self, state, rewind, round_index, start_epoch, runs):
        cfg, opts = self.config, self.options
        holder = {"rewind": rewind}

        def on_epoch_end(state, done):
            if round_index == 0 and done == opts.rewind_epoch:
                holder["rewind"] = self._rewind_point(state)
            if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
                # before the rewind point exists, the current state stands in for it (never used)
                self._save(state, holder["rewind"] or self._rewind_point(state), round_index, done, runs)

        state = self.trainer.train_epochs(state, self.method, start_epoch, data_seed=cfg.seed,
                                          epoch_offset=round_index * cfg.epochs, label={"round": round_index},
                                          metrics_path=self.metrics_path, on_epoch_end=on_epoch_end)
        return state, holder["rewind"]

    def scores(self, state: TrainState, trained_round: int | None = None) -> dict:
        """The criterion's scores for the current (trained) state; firing statistics, when the
        criterion needs them, are saved as WORKDIR/firing_stats_round{trained_round}.npz."""
        stats = {}
        if self.options.criterion != "magnitude":
            stats = collect_statistics(self.trainer, state, self.method, self.options.calibration_batches, self.config.seed)
            if trained_round is not None and jax.process_index() == 0:
                np.savez(os.path.join(self.workdir, f"firing_stats_round{trained_round}.npz"),
                         **{f"{path}:{k}": v for path, entry in stats.items() for k, v in entry.items()})
        criterion = get_criterion(self.options.criterion)
        return criterion(state.weights, {"bn": state.bn, "batch_stats": state.batch_stats}, stats,
                         threshold=self.config.threshold, epsilon=self.model.bn.epsilon)

    def prune_and_rewind(self, state: TrainState, rewind: dict, round_index: int) -> TrainState:
        """Prunes to round ``round_index``'s sparsity, rewinds the survivors, resets the optimizer."""
        scores = self.scores(state, trained_round=round_index - 1)
        magnitudes = get_criterion("magnitude")(state.weights)
        masks = next_masks(scores, state.masks, self.options, round_index, magnitudes, self.method.dns_layers)
        rewound = kernels(rewind["weights"])
        # pruned weights are exactly 0 except in DNS layers, whose weights are rewound unmasked
        masked = M.apply_masks(rewound, _ones_for(masks, self.method.dns_layers))
        state = state.replace(weights=with_kernels(rewind["weights"], masked), masks=masks,
                              bn=rewind["bn"], batch_stats=rewind["batch_stats"])
        return self.trainer.fresh_optimizer(state, self.method, self.config.seed + round_index)

    def _write_results(self, runs: list) -> dict:
        results = {"method": "imp", "criterion": self.options.criterion, "dns": self.options.dns,
                   "scope": self.options.scope, "dataset": self.config.dataset, "model": self.config.model,
                   "seed": self.config.seed, "runs": sorted(runs, key=lambda r: r["round"])}
        write_json(os.path.join(self.workdir, RESULTS), results)
        label = label_of(self.options)
        plots.accuracy_vs_sparsity({label: [[(r["sparsity"], r["test_accuracy"]) for r in results["runs"]]]},
                                   os.path.join(self.workdir, "accuracy_vs_sparsity.png"), x_axis="remaining",
                                   title=f"{label} on {self.config.dataset}")
        plots.training_curves(read_jsonl(self.metrics_path), os.path.join(self.workdir, "training_curves.png"),
                              group_key="round", title=label)
        return results


def label_of(options: IMPOptions) -> str:
    if options.criterion == "sf":
        return "SF-IMP-2" if options.dns else "SF-IMP-1"
    return f"IMP ({options.criterion}{', DNS' if options.dns else ''})"


def compare_plot(workdirs: list[str], path: str) -> str:
    """Overlays IMP runs (paper Fig. 5 style): one line per criterion, mean ± std over seeds."""
    curves: dict[str, list] = {}
    for w in workdirs:
        r = read_json(os.path.join(w, RESULTS))
        if not r:
            raise FileNotFoundError(f"{w} has no {RESULTS}")
        opts = IMPOptions(criterion=r["criterion"], dns=r["dns"])
        curves.setdefault(label_of(opts), []).append([(x["sparsity"], x["test_accuracy"]) for x in r["runs"]])
    return plots.accuracy_vs_sparsity(curves, path, x_axis="remaining", title="IMP criteria")
