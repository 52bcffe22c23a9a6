"""Iterative magnitude pruning with rewinding (Frankle & Carbin; Kim et al.), SF-IMP-1 and SF-IMP-2.

Round 0 trains the dense network. Each later round prunes ``prune_rate`` of
the still-unpruned maskable weights (by the criterion, within the scope),
rewinds the surviving weights, BN scale/bias and running statistics to the
rewind point, and trains again with a fresh optimizer (SPEC §4-5).

Every round is one segment of the run's checkpoints (``run.RunCheckpoints``,
position = round, epoch, batch): the training state, the masks and the rewind
point, saved at epoch ends, every ``--checkpoint-every-steps`` steps and on
SIGTERM/SIGINT; rerunning the same command continues from the newest one.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jsnn import plots
from jsnn.config import TrainConfig, dataset_family
from jsnn.methods import MaskedTraining
from jsnn.metrics import log, read_json, read_jsonl, write_json
from jsnn.parallel import put_replicated
from jsnn.run import (METRICS, RESULTS, Position, RunCheckpoints, describe, drop_metrics_after, prepare,
                      run_signature, train_segment)
from jsnn.sparsity import masks as M
from jsnn.sparsity import criteria, distributions
from jsnn.sparsity.distributions import DISTRIBUTIONS
from jsnn import controls
from jsnn.controls import CONTROLS
from jsnn.sparsity import early_bird as early_bird_rule
from jsnn.efficiency.report import entries_figure
from jsnn.ticket import load_ticket, record_ticket, round_path, save_ticket
from jsnn.trainer import Trainer, TrainState
from jsnn.variables import Variables, check_kernel_tree, init_variables, map_with_names, named_kernels

# Kim et al.: 15 rounds counting the dense round 0 (sparsity up to 1 - 0.75^14 = 98.2%),
# 25% per round, late rewinding to epoch 20 of round 0. Digits: a short budget.
REWIND_EPOCH = {"cifar": 20, "digits": 2}
SCOPES = tuple(sorted(DISTRIBUTIONS))  # sparsity distributions (jsnn/sparsity/distributions.py)


@dataclasses.dataclass(frozen=True)
class IMPOptions:
    rounds: int = 15  # counting the dense round 0
    prune_rate: float = 0.25  # fraction of the remaining weights pruned each round
    rewind_epoch: int | None = None  # None: 20 for CIFAR (Kim et al.), 2 for digits; 0 = initialisation
    criterion: str = "magnitude"  # a name in jsnn.sparsity.criteria.CRITERIA: magnitude | sf | snip | random | ...
    scope: str | None = None  # the sparsity distribution; None: the criterion's (global for magnitude, Kim et al.;
    #                           matched for sf, SPEC §5)
    dns: bool = False  # SF-IMP-2: dynamic network surgery on the encoding and linear layers
    calibration_batches: int = 10  # training batches the SF statistics are collected over (cost < 1% of an epoch)
    # controls (jsnn/controls.py): each round k >= 1 trains round k's mask of the run in ``ticket_dir`` as
    # reinit (fresh weights), random (a random mask of its per-layer counts, its rewind point) or
    # ticket (that ticket itself, e.g. an early-bird ticket retrained for the full round)
    control: str | None = None
    ticket_dir: str | None = None
    early_bird: bool = False  # stop a round once the mask it would prune to has settled (You et al. 2020)
    early_bird_window: int = early_bird_rule.WINDOW
    early_bird_threshold: float = early_bird_rule.THRESHOLD

    # not part of the run's signature: rerunning with more rounds continues a finished run
    RUN_CONTROL = ("rounds",)

    def resolve(self, config: TrainConfig) -> "IMPOptions":
        rewind = self.rewind_epoch
        if rewind is None:  # the preset, never past the end of a short round 0
            rewind = min(REWIND_EPOCH.get(dataset_family(config.dataset), 0), config.epochs)
        scope = self.scope or criteria.criterion(self.criterion).distribution
        out = dataclasses.replace(self, rewind_epoch=rewind, scope=scope)
        if out.rounds < 1:
            raise ValueError(f"--rounds must be >= 1 (round 0 is the dense network), got {out.rounds}")
        if not 0.0 < out.prune_rate < 1.0:
            raise ValueError(f"--prune-rate is the fraction of remaining weights pruned per round, in (0, 1); "
                             f"got {out.prune_rate}")
        if not 0 <= out.rewind_epoch <= config.epochs:
            raise ValueError(f"--rewind-epoch must lie in [0, epochs = {config.epochs}], got {out.rewind_epoch}")
        if out.scope not in SCOPES:
            raise ValueError(f"--scope (the sparsity distribution) must be one of {SCOPES}, got {out.scope!r}")
        if out.calibration_batches < 1:
            raise ValueError(f"--calibration-batches must be >= 1, got {out.calibration_batches}")
        if out.control not in (None,) + CONTROLS:
            raise ValueError(f"--control must be one of {CONTROLS}, got {out.control!r}")
        if out.control and out.early_bird:
            raise ValueError("--early-bird searches for tickets; a --control run trains given ones. Run the "
                             "early-bird search first, then --control ticket --ticket ITS_WORKDIR")
        if out.control == "ticket" and not out.ticket_dir:
            raise ValueError("--control ticket retrains the tickets of another run: give its workdir with --ticket")
        if out.early_bird:
            early_bird_rule.EarlyBird(out.early_bird_window, out.early_bird_threshold)  # checks both
        return out


def dns_layers(model, weights) -> tuple[str, ...]:
    """The encoding layer and every linear layer: where SF-IMP-2 applies dynamic network surgery."""
    return tuple(sorted(n for n, k in named_kernels(weights).items() if k.ndim == 2 or n == model.encoding_layer))


def _ones_for(masks, layers):
    """``masks`` with the named layers all ones: their pruned weights may compete again (DNS)."""
    return map_with_names(lambda name, m: jnp.ones_like(m) if name in layers else m, masks)


def next_masks(scores, masks, options: IMPOptions, round_index: int, magnitudes, revivable=()):
    """Masks for ``round_index`` (>= 1) at density (1 - rate)^round_index, distributed over the layers by
    ``options.scope`` (global: round(total * density) weights in all).

    ``revivable`` layers (DNS) rank all their weights, pruned ones included.
    """
    density = (1.0 - options.prune_rate) ** round_index
    return distributions.prune(options.scope, scores, _ones_for(masks, revivable), density, magnitudes)


@dataclasses.dataclass
class IMPRun:
    """One IMP run (one criterion, one seed) in one workdir."""

    config: TrainConfig
    options: IMPOptions
    workdir: str
    trainer: Trainer | None = None

    def __post_init__(self):
        self.options = self.options.resolve(self.config)  # idempotent: presets filled, values checked
        self.signature = run_signature("imp", self.config, self.options)
        if self.trainer is None:
            _, _, self.trainer = prepare(self.config, self.workdir, self.signature,
                                         {"imp": dataclasses.asdict(self.options)})
        t = self.trainer
        self.model = t.model
        self.variables = init_variables(self.model, jax.random.key(self.config.seed), (1,) + t.dataset.image_shape)
        revivable = dns_layers(self.model, self.variables.weights) if self.options.dns else ()
        self.method = MaskedTraining(dns_layers=revivable)
        self.checkpoints = RunCheckpoints(t, self.workdir, self.signature)
        self.metrics_path = os.path.join(self.workdir, METRICS)
        self.rewind: dict | None = None  # weights, BN and statistics the survivors go back to each round
        self.runs: list[dict] = []  # one results entry per finished round
        self.early_bird: early_bird_rule.EarlyBird | None = None  # the round in progress's stopping rule
        self.early_bird_log: dict[str, dict] = {}  # per round: epochs run, distances, seconds spent on them
        if self.options.control and not self.options.ticket_dir:
            raise ValueError(f"--control {self.options.control} needs the ticket run's workdir (ticket_dir)")

    # -- checkpointed state -----------------------------------------------------------------------
    @staticmethod
    def _rewind_point(state: TrainState) -> dict:
        return jax.tree.map(np.array, {"weights": state.weights, "bn": state.bn, "batch_stats": state.batch_stats})

    def _extra(self) -> dict:
        extra = {"rewind": self.rewind} if self.rewind is not None else {}
        if self.early_bird is not None and self.early_bird.masks:  # the masks of the round's last epochs
            extra["early_bird"] = {str(i): m for i, m in enumerate(self.early_bird.masks)}
        return extra

    def _info(self) -> dict:
        queue = len(self.early_bird.masks) if self.early_bird is not None else 0
        return {"runs": self.runs, "has_rewind": self.rewind is not None, "early_bird_queue": queue,
                "early_bird_log": self.early_bird_log}

    def _extra_like(self, state: TrainState, meta: dict) -> dict:
        like = {"rewind": self._rewind_point(state)} if meta["has_rewind"] else {}
        if meta.get("early_bird_queue"):
            masks = jax.tree.map(np.array, state.masks)
            like["early_bird"] = {str(i): masks for i in range(meta["early_bird_queue"])}
        return like

    # -- the rounds ---------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, opts, t = self.config, self.options, self.trainer
        state = t.new_state(self.variables, {}, self.method, cfg.seed)
        self.rewind = self._rewind_point(state) if opts.rewind_epoch == 0 else None
        start, partial = Position(), None
        resumed = self.checkpoints.restore(state, lambda meta: self._extra_like(state, meta))
        if resumed is not None:
            state, extra, start, meta = resumed
            self.rewind, self.runs, partial = extra.get("rewind"), meta["runs"], meta.get("partial_epoch")
            self.early_bird_log = meta.get("early_bird_log", {})
            if self.options.early_bird:
                queue = extra.get("early_bird", {})
                self.early_bird = self._new_early_bird(state)
                self.early_bird.masks = [queue[str(i)] for i in range(len(queue))]
            log(f"resuming from {self.checkpoints.directory}: round {start.segment}, {describe(start, cfg.epochs)}")
        drop_metrics_after(self.metrics_path, lambda r: (r.get("round", 0), r["epoch"]) <= (start.segment, start.epoch))

        for round_index in range(start.segment, opts.rounds):
            here = start if round_index == start.segment else Position(round_index)
            state = self._train_round(state, here, partial if here == start else None)
            entry = {"round": round_index, "sparsity": t.sparsity(state, self.method),
                     "sparsity_target": 1.0 - (1.0 - opts.prune_rate) ** round_index,
                     "layer_sparsity": M.layer_sparsity_of(state.masks), **t.evaluate(state, self.method),
                     **self.early_bird_log.get(str(round_index), {})}
            entry = record_ticket(round_path(self.workdir, round_index), cfg, t.dataset.num_classes, state,
                                  self.method, entry, t.dataset)
            self.runs = [r for r in self.runs if r["round"] != round_index] + [entry]
            self._write_results(self.runs)
            log(f"round {round_index}: sparsity {entry['sparsity']:.4f} test accuracy {entry['test_accuracy']:.4f}")
            if round_index + 1 < opts.rounds:
                state = self.prune_and_rewind(state, self.rewind, round_index + 1)
                self.checkpoints.save(Position(round_index + 1), state, self._extra(), self._info())
        return self._write_results(self.runs)

    def _new_early_bird(self, state: TrainState) -> early_bird_rule.EarlyBird:
        """The stopping rule of a round; distances over the weights still in play (DNS layers: all)."""
        live = jax.tree.map(np.array, _ones_for(state.masks, self.method.dns_layers))
        return early_bird_rule.EarlyBird(self.options.early_bird_window, self.options.early_bird_threshold, live)

    def _early_bird_stop(self, state: TrainState, round_index: int, done: int) -> bool:
        """After epoch ``done`` of ``round_index``: the mask pruning would give now; True once it has settled."""
        t0 = time.perf_counter()
        mask = jax.tree.map(np.array, self.would_be_masks(state, round_index + 1))
        stop = self.early_bird.update(mask)
        log_ = self.early_bird_log.setdefault(str(round_index), {"early_bird_distances": [],
                                                                 "early_bird_seconds": 0.0})
        log_["early_bird_distances"].append([done, max(self.early_bird.distances, default=1.0)])
        log_["early_bird_seconds"] += time.perf_counter() - t0
        log_["epochs_run"] = done
        log_["early_bird_stopped"] = bool(stop)
        if stop:
            log(f"round {round_index}: early-bird ticket after epoch {done}/{self.config.epochs} (distances "
                f"{', '.join(f'{d:.4f}' for d in self.early_bird.distances)} < {self.early_bird.threshold})")
        return stop

    def _train_round(self, state: TrainState, start: Position, partial_epoch: dict | None = None) -> TrainState:
        """Trains round ``start.segment`` from ``start``; round 0 records the rewind point. With
        early-bird, a round that is not the last ends once the mask it would prune to has settled."""
        round_index = start.segment
        opts = self.options
        if opts.control and round_index == 0:
            return self._ticket_round_zero(state)
        searching = opts.early_bird and round_index + 1 < opts.rounds
        if searching and self.early_bird_log.get(str(round_index), {}).get("early_bird_stopped") \
                and start.batch == 0 and start.epoch == self.early_bird_log[str(round_index)]["epochs_run"]:
            return state  # resumed where the early-bird rule had ended this round
        if searching and (self.early_bird is None or (start.epoch == 0 and start.batch == 0)):
            self.early_bird = self._new_early_bird(state)
            self.early_bird_log.pop(str(round_index), None)
        elif not searching:
            self.early_bird = None

        def on_epoch_end(state, done):
            if round_index == 0 and done == opts.rewind_epoch:
                self.rewind = self._rewind_point(state)
            # round 0 runs at least to its rewind point
            if searching and (round_index > 0 or done >= opts.rewind_epoch):
                return self._early_bird_stop(state, round_index, done)

        return train_segment(self.trainer, self.checkpoints, state, self.method, start, partial_epoch=partial_epoch,
                             extra=self._extra, info=self._info, label={"round": round_index},
                             metrics_path=self.metrics_path, on_epoch_end=on_epoch_end)

    def scores(self, state: TrainState, trained_round: int | None = None, save: bool = True) -> dict:
        """The criterion's scores for the current (trained) state, from exactly the inputs it declares.

        Firing statistics, when gathered, are saved as WORKDIR/firing_stats_round{trained_round}.npz.
        """
        calibration = criteria.Calibration(self.trainer, state, self.method, self.options.calibration_batches,
                                           self.config.seed, round_index=trained_round or 0)
        inputs = criteria.gather_inputs(self.options.criterion, calibration)
        if save and "stats" in inputs and trained_round is not None and jax.process_index() == 0:
            np.savez(os.path.join(self.workdir, f"firing_stats_round{trained_round}.npz"),
                     **{f"{path}:{k}": v for path, entry in inputs["stats"].items() for k, v in entry.items()})
        return criteria.scores(self.options.criterion, state.weights, inputs)

    def would_be_masks(self, state: TrainState, round_index: int, save: bool = False):
        """The masks pruning the current state would give for ``round_index``."""
        scores = self.scores(state, trained_round=round_index - 1, save=save)
        magnitudes = criteria.get_criterion("magnitude")(state.weights)
        return next_masks(scores, state.masks, self.options, round_index, magnitudes, self.method.dns_layers)

    def prune_and_rewind(self, state: TrainState, rewind: dict, round_index: int) -> TrainState:
        """Prunes to round ``round_index``'s sparsity, rewinds the survivors, resets the optimizer.

        A control run takes round ``round_index``'s variables from the ticket run instead (``control_variables``).
        """
        if self.options.control:
            v = self.control_variables(round_index)
        else:
            if round_index == 1 and jax.process_index() == 0:  # what random-mask controls rewind to
                save_ticket(rewind_path(self.workdir), self.config, self.trainer.dataset.num_classes,
                            Variables(rewind["weights"], jax.tree.map(np.ones_like, state.masks), rewind["bn"],
                                      rewind["batch_stats"]), {"rewind_epoch": self.options.rewind_epoch})
            masks = self.would_be_masks(state, round_index, save=True)
            # pruned weights are exactly 0 except in DNS layers, whose weights are rewound unmasked
            v = controls.rewound_variables(Variables(rewind["weights"], None, rewind["bn"], rewind["batch_stats"]),
                                           masks, self.method.dns_layers)
        state = state.replace(weights=v.weights, masks=v.masks, bn=v.bn, batch_stats=v.batch_stats)
        return self.trainer.fresh_optimizer(state, self.method, self.config.seed + round_index)

    def _ticket_round_zero(self, state: TrainState) -> TrainState:
        """A control's round 0 is the ticket run's dense network (no mask, same seed): taken, not retrained."""
        path = round_path(self.options.ticket_dir, 0)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the ticket run in {self.options.ticket_dir} has no round 0 ({path}); run it first")
        v = load_ticket(path).variables
        check_kernel_tree(v.masks, self.variables.weights, f"the masks of {path}")
        return put_replicated(self.trainer.mesh, state.replace(weights=v.weights, masks=v.masks, bn=v.bn,
                                                               batch_stats=v.batch_stats))

    def control_variables(self, round_index: int) -> Variables:
        """Round ``round_index`` of a control: the ticket run's mask of that round with fresh weights (reinit),
        a random mask of its per-layer counts on the ticket's rewind point (random), or the ticket itself."""
        ticket_dir, control = self.options.ticket_dir, self.options.control
        path = round_path(ticket_dir, round_index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the ticket run in {ticket_dir} has no round {round_index} ({path}); "
                                    f"finish it with at least {self.options.rounds} rounds first")
        ticket_masks = load_ticket(path).variables.masks
        check_kernel_tree(ticket_masks, self.variables.weights, f"the masks of {path}")
        if control == "reinit":
            return controls.reinit_variables(self.model, (1,) + self.trainer.dataset.image_shape, ticket_masks,
                                              self.config.seed, self.method.dns_layers)
        rewind = load_ticket(rewind_path(ticket_dir)).variables
        masks = ticket_masks
        if control == "random":
            key = jax.random.fold_in(jax.random.key(self.config.seed + controls.RESEED), round_index)
            masks = controls.random_masks(ticket_masks, key)
        return controls.rewound_variables(rewind, masks, self.method.dns_layers)

    def _write_results(self, runs: list) -> dict:
        results = {"method": "imp", "criterion": self.options.criterion, "dns": self.options.dns,
                   "scope": self.options.scope, "dataset": self.config.dataset, "model": self.config.model,
                   "seed": self.config.seed, "control": self.options.control, "ticket_dir": self.options.ticket_dir,
                   "early_bird": self.options.early_bird, "runs": sorted(runs, key=lambda r: r["round"])}
        write_json(os.path.join(self.workdir, RESULTS), results)
        label = label_of(self.options)
        plots.accuracy_vs_sparsity({label: [[(r["sparsity"], r["test_accuracy"]) for r in results["runs"]]]},
                                   os.path.join(self.workdir, "accuracy_vs_sparsity.png"), x_axis="remaining",
                                   title=f"{label} on {self.config.dataset}")
        entries_figure({label: [results["runs"]]}, os.path.join(self.workdir, "accuracy_vs_energy.png"),
                       title=f"{label} on {self.config.dataset}")
        plots.training_curves(read_jsonl(self.metrics_path), os.path.join(self.workdir, "training_curves.png"),
                              group_key="round", title=label)
        return results


CONTROL_LABELS = {"reinit": "reinit", "random": "random mask", "ticket": "ticket retrained"}


def label_of(options: IMPOptions) -> str:
    label = criteria.criterion(options.criterion).label(options.dns)
    if options.control:
        label += f", {CONTROL_LABELS[options.control]}"
    return label + (", early-bird" if options.early_bird else "")


def rewind_path(workdir: str) -> str:
    """Where a ticket run keeps its rewind point (weights, BN, statistics; masks all ones)."""
    return os.path.join(workdir, "tickets", "rewind.npz")


def run_imp(config: TrainConfig, options: IMPOptions, workdir: str, trainer: Trainer | None = None) -> dict:
    """One IMP run; a control without a ticket run first runs its ticket in WORKDIR/ticket."""
    if options.control and not options.ticket_dir:
        ticket_dir = os.path.join(workdir, "ticket")
        IMPRun(config, dataclasses.replace(options, control=None), ticket_dir, trainer).run()
        options = dataclasses.replace(options, ticket_dir=ticket_dir)
    return IMPRun(config, options, workdir, trainer).run()


def compare_plot(workdirs: list[str], path: str) -> str:
    """Overlays IMP runs (paper Fig. 5 style): one line per criterion, mean ± std over seeds; accuracy
    against energy per image beside it (PATH_energy.png)."""
    curves: dict[str, list] = {}
    entries: dict[str, list] = {}
    for w in workdirs:
        r = read_json(os.path.join(w, RESULTS))
        if not r:
            raise FileNotFoundError(f"{w} has no {RESULTS}")
        opts = IMPOptions(criterion=r["criterion"], dns=r["dns"], control=r.get("control"),
                          early_bird=r.get("early_bird", False))
        curves.setdefault(label_of(opts), []).append([(x["sparsity"], x["test_accuracy"]) for x in r["runs"]])
        entries.setdefault(label_of(opts), []).append(r["runs"])
    entries_figure(entries, os.path.splitext(path)[0] + "_energy.png", title="IMP criteria")  # beside it
    dashed = [label for label in curves if any(f", {c}" in label for c in ("reinit", "random mask"))]
    return plots.accuracy_vs_sparsity(curves, path, x_axis="remaining", title="IMP criteria", dashed=dashed)
