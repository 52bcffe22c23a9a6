"""Iterative magnitude pruning with rewinding (Frankle & Carbin; Kim et al.), SF-IMP-1 and SF-IMP-2.

Round 0 trains the dense network. Each later round prunes ``prune_rate`` of
the still-unpruned maskable weights (by the criterion, within the scope),
rewinds the surviving weights, BN scale/bias and running statistics to the
rewind point, and trains again with a fresh optimizer; pruned weights stay exactly 0.

Every round is one segment of the run (``runs/run.py``): the training state,
the masks and the rewind point are checkpointed at epoch ends, every
``--checkpoint-every-steps`` steps and on SIGTERM/SIGINT; rerunning the same
command continues from the newest one. Two collaborators change what a round
is without branches in the rounds: where a round's variables come from
(``PruneAndRewind``, the ticket search, or ``controls.TicketSource``, the
lottery-ticket controls), and when a round ends (every epoch, or
``early_bird.EarlyBirdSearch``).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from jsnn import plots
from jsnn.config import IMP_REWIND_EPOCH, TrainConfig, setting, with_option_presets
from jsnn.metrics import is_primary, log
from jsnn.runs import controls
from jsnn.runs.controls import CONTROLS, TicketSource
from jsnn.runs.early_bird import EarlyBirdSearch, ones_for
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.results import entries_figure
from jsnn.runs.run import Plan, Run
from jsnn.runs.tickets import rewind_path, round_path
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import criteria, distributions, patterns
from jsnn.sparsity import early_bird as early_bird_rule
from jsnn.sparsity import masks as M
from jsnn.sparsity.distributions import DISTRIBUTIONS
from jsnn.ticket import save_ticket
from jsnn.trainer import Trainer, TrainState
from jsnn.training_rules import MaskedTraining
from jsnn.variables import Variables, init_variables, named_kernels

PRUNING, CONTROL = "pruning", "lottery-ticket controls and early-bird tickets"
_TYPE_HELP = ("unstructured (any weights), channel (whole output channels; each layer's count rounded to whole "
              "channels) or N:M, e.g. 2:4 (n of every m weights along the input axis")


@dataclasses.dataclass(frozen=True)
class IMPOptions:
    """IMP's own settings; ``train/imp.py`` has one flag per field (``train/flags.py``)."""

    rounds: int = setting(15, "counting the dense round 0 (Kim et al.: 15)", group=PRUNING)
    prune_rate: float = setting(0.25, "of the remaining weights, per round", group=PRUNING)
    # None: the dataset's preset (METHOD_PRESETS: 20 for CIFAR, Kim et al.; 2 for digits); 0 = initialisation
    rewind_epoch: int | None = setting(None, "epoch of round 0 to rewind to (0 = init; unset: CIFAR "
                                       f"{IMP_REWIND_EPOCH['cifar']}, digits {IMP_REWIND_EPOCH['digits']})",
                                       group=PRUNING)
    criterion: str = setting("magnitude", group=PRUNING, choices="criteria")  # jsnn.sparsity.criteria.CRITERIA
    # the sparsity distribution; None: the criterion's (global for magnitude, Kim et al.; matched for sf: each
    # layer loses what global magnitude would take and the criterion picks which)
    scope: str | None = setting(None, "sparsity distribution: global (default for magnitude), uniform, erk, or "
                                "matched (default for sf: each layer loses what global magnitude would take, the "
                                "criterion picks which)", group=PRUNING, choices="distributions")
    dns: bool = setting(False, "SF-IMP-2: dynamic network surgery on encoding/linear layers", group=PRUNING)
    calibration_batches: int = setting(10, "training batches for the SF firing statistics", group=PRUNING)
    # controls (jsnn/runs/controls.py): each round k >= 1 trains round k's mask of the run in ``ticket_dir`` as
    # reinit (fresh weights), random (a random mask of its per-layer counts, its rewind point) or
    # ticket (that ticket itself, e.g. an early-bird ticket retrained for the full round)
    control: str | None = setting(None, "reinit: each round's ticket mask with fresh weights (another seed); random: "
                                  "a random mask with the ticket's per-layer counts on its rewind point; ticket: the "
                                  "tickets of --ticket retrained for full rounds. Without --ticket the ticket run "
                                  "goes to WORKDIR/ticket first", group=CONTROL, choices=CONTROLS)
    ticket_dir: str | None = setting(None, "the IMP run whose tickets a --control run takes (with --seeds: "
                                     "WORKDIR/seed_N)", group=CONTROL, flag="--ticket", metavar="WORKDIR")
    # stop a round once the mask it would prune to has settled (You et al. 2020)
    early_bird: bool = setting(False, "end each round once the mask pruning would give has settled "
                               "(You et al. 2020)", group=CONTROL)
    early_bird_window: int = setting(early_bird_rule.WINDOW, "epochs whose masks must agree (You et al.: 5)",
                                     group=CONTROL)
    early_bird_threshold: float = setting(early_bird_rule.THRESHOLD, "largest normalised Hamming distance between "
                                          "them (You et al.: 0.1)", group=CONTROL)
    # the pattern each round's masks keep (jsnn/sparsity/patterns.py); N:M is reached in round 1, the only pruning
    # round. In the signature only when not unstructured (older runs keep theirs)
    sparsity_type: str = setting(patterns.UNSTRUCTURED, f"the pattern each round's masks keep: {_TYPE_HELP}; "
                                 "round 1 prunes straight to it, so --rounds 2)", group=PRUNING,
                                 parse=patterns.flag_value, metavar="|".join(patterns.sparsity_type_names()))

    # not part of the run's signature: rerunning with more rounds continues a finished run
    RUN_CONTROL = ("rounds",)

    def unrecorded(self) -> tuple[str, ...]:
        """The fields left out of the signature and config.json: the sparsity type when unstructured (runs of
        it keep the signatures they had before sparsity types existed)."""
        return ("sparsity_type",) if self.sparsity_type == patterns.UNSTRUCTURED else ()

    def resolve(self, config: TrainConfig) -> "IMPOptions":
        rewind = self.rewind_epoch
        if rewind is None:  # the preset, never past the end of a short round 0
            rewind = min(with_option_presets(self, "imp", config.dataset).rewind_epoch, config.epochs)
        scope = self.scope or criteria.criterion(self.criterion).distribution
        out = dataclasses.replace(self, rewind_epoch=rewind, scope=scope,
                                  sparsity_type=patterns.canonical(self.sparsity_type))
        if out.rounds < 1:
            raise ValueError(f"--rounds must be >= 1 (round 0 is the dense network), got {out.rounds}")
        if not 0.0 < out.prune_rate < 1.0:
            raise ValueError(f"--prune-rate is the fraction of remaining weights pruned per round, in (0, 1); "
                             f"got {out.prune_rate}")
        if not 0 <= out.rewind_epoch <= config.epochs:
            raise ValueError(f"--rewind-epoch must lie in [0, epochs = {config.epochs}], got {out.rewind_epoch}")
        if out.scope not in DISTRIBUTIONS:  # the registry as it is now: distributions registered later count
            raise ValueError(f"--scope (the sparsity distribution) must be one of {sorted(DISTRIBUTIONS)}, "
                             f"got {out.scope!r}")
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
            early_bird_rule.EarlyBirdRule(out.early_bird_window, out.early_bird_threshold)  # checks both
        if patterns.fixed_density(out.sparsity_type) is not None and out.rounds > 2:
            raise ValueError(f"--sparsity-type {out.sparsity_type} sets every layer it applies to at density "
                             f"{out.sparsity_type.replace(':', '/')} in one step: IMP prunes to it in round 1 and "
                             f"has no later rounds; pass --rounds 2 (the dense round 0 and round 1), got {out.rounds}")
        if out.sparsity_type != patterns.UNSTRUCTURED and out.control == "random":
            raise ValueError(f"--control random draws unstructured masks; it does not apply with --sparsity-type "
                             f"{out.sparsity_type}")
        return out


def dns_layers(model, weights) -> tuple[str, ...]:
    """The encoding layer and every linear layer: where SF-IMP-2 applies dynamic network surgery."""
    return tuple(sorted(n for n, k in named_kernels(weights).items() if k.ndim == 2 or n == model.encoding_layer))


def next_masks(scores, masks, options: IMPOptions, round_index: int, magnitudes, revivable=()):
    """Masks for ``round_index`` (>= 1) at density (1 - rate)^round_index, distributed over the layers by
    ``options.scope`` (global: round(total * density) weights in all).

    ``revivable`` layers (DNS) rank all their weights, pruned ones included. The masks keep
    ``options.sparsity_type``'s pattern: channel rounds each layer's count to whole output channels; N:M
    (round 1 only) keeps n of every m along each layer's input axis, whatever the density and scope.
    """
    density = (1.0 - options.prune_rate) ** round_index
    return distributions.prune(options.scope, scores, ones_for(masks, revivable), density, magnitudes,
                               options.sparsity_type)


def imp_signature(config: TrainConfig, options: IMPOptions) -> dict:
    """The run's signature (the sparsity type enters only when it is not unstructured)."""
    return run_signature("imp", config, options)


def sparsity_target(options: IMPOptions, round_index: int) -> float:
    """What round ``round_index`` prunes to: 1 - (1 - rate)^k; N:M: 1 - n/m from round 1 (its layers)."""
    fixed = patterns.fixed_density(options.sparsity_type)
    if fixed is not None and round_index >= 1:
        return 1.0 - fixed
    return 1.0 - (1.0 - options.prune_rate) ** round_index


def imp_label(options: IMPOptions) -> str:
    """How figures and tables name the run: the criterion, its control, early-bird."""
    label = criteria.criterion(options.criterion).label(options.dns)
    if options.control:
        label += f", {controls.LABELS[options.control]}"
    label += ", early-bird" if options.early_bird else ""
    return label + (f", {options.sparsity_type}" if options.sparsity_type != patterns.UNSTRUCTURED else "")


def rewind_point(state: TrainState) -> dict:
    """What the survivors of each round go back to: weights, BN and running statistics (host copies)."""
    return jax.tree.map(np.array, {"weights": state.weights, "bn": state.bn, "batch_stats": state.batch_stats})


class PruneAndRewind:
    """The ticket search's rounds: round 0 trains the dense network; round k prunes the trained
    state by the criterion and rewinds the survivors."""

    def __init__(self, plan: "IMPPlan"):
        self.plan = plan

    def round_zero(self, run: Run, state: TrainState) -> TrainState | None:
        return None  # trained like any round

    def round_variables(self, run: Run, state: TrainState, round_index: int) -> Variables:
        plan = self.plan
        rewind = plan.rewind
        if round_index == 1 and is_primary():  # what random-mask controls rewind to
            save_ticket(rewind_path(run.workdir), plan.config, run.dataset.num_classes,
                        Variables(rewind["weights"], jax.tree.map(np.ones_like, state.masks), rewind["bn"],
                                  rewind["batch_stats"]), {"rewind_epoch": plan.options.rewind_epoch})
        masks = plan.would_be_masks(run, state, round_index, save=True)
        # pruned weights are exactly 0 except in DNS layers, whose weights are rewound unmasked
        return controls.rewound_variables(Variables(rewind["weights"], None, rewind["bn"], rewind["batch_stats"]),
                                          masks, plan.rule.dns_layers)


class ControlRounds:
    """A control's rounds, taken from its ticket run (``controls.TicketSource``)."""

    def __init__(self, plan: "IMPPlan"):
        self.plan = plan
        self.source = TicketSource(plan.options.control, plan.options.ticket_dir, plan.config.seed)

    def round_zero(self, run: Run, state: TrainState) -> TrainState | None:
        return self.source.round_zero(run, state)

    def round_variables(self, run: Run, state: TrainState, round_index: int) -> Variables:
        return self.source.round_variables(run, state, round_index, self.plan.options.rounds,
                                           self.plan.rule.dns_layers)


class IMPPlan(Plan):
    """IMP as a plan of ``options.rounds`` segments (``runs/run.py``)."""

    name = "imp"

    def __init__(self, config: TrainConfig, options: IMPOptions):
        super().__init__(config, options.resolve(config))  # idempotent: presets filled, values checked
        if self.options.control and not self.options.ticket_dir:
            raise ValueError(f"--control {self.options.control} needs the ticket run's workdir (ticket_dir)")
        self.segments = self.options.rounds
        self.label = imp_label(self.options)
        self.rounds = ControlRounds(self) if self.options.control else PruneAndRewind(self)
        self.rewind: dict | None = None  # weights, BN and statistics the survivors go back to each round
        self.search: EarlyBirdSearch | None = None
        self.variables: Variables | None = None
        self.rule: MaskedTraining | None = None

    def setup(self, run: Run) -> TrainState:
        self.variables = init_variables(run.model, jax.random.key(self.config.seed), (1,) + run.dataset.image_shape)
        revivable = dns_layers(run.model, self.variables.weights) if self.options.dns else ()
        self.rule = MaskedTraining(dns_layers=revivable)
        note = patterns.dense_note(self.options.sparsity_type,
                                   {n: k.shape for n, k in named_kernels(self.variables.weights).items()})
        if note:
            log(note)
        if self.options.early_bird:
            self.search = EarlyBirdSearch(self.options.early_bird_window, self.options.early_bird_threshold,
                                          revivable, self.config.epochs,
                                          lambda state, next_round: self.would_be_masks(run, state, next_round))
        state = run.new_state(self.variables, {}, self.rule)
        self.rewind = rewind_point(state) if self.options.rewind_epoch == 0 else None
        return state

    # -- checkpointed -------------------------------------------------------------------------
    def checkpoint_extra(self) -> dict:
        extra = {"rewind": self.rewind} if self.rewind is not None else {}
        return {**extra, **(self.search.checkpoint_extra() if self.search else {})}

    def checkpoint_info(self) -> dict:
        return {"has_rewind": self.rewind is not None, **(self.search.checkpoint_info() if self.search else {})}

    def checkpoint_like(self, state: TrainState, meta: dict) -> dict:
        like = {"rewind": rewind_point(state)} if meta["has_rewind"] else {}
        return {**like, **EarlyBirdSearch.checkpoint_like(state, meta)}

    def restore(self, run: Run, state: TrainState, extra: dict, meta: dict) -> None:
        self.rewind = extra.get("rewind")
        if self.search is not None:
            self.search.restore(state, extra, meta)

    # -- the rounds ---------------------------------------------------------------------------
    def segment_label(self, segment: int) -> dict:
        return {"round": segment}  # a run of one round too (its metrics and tickets are round 0's)

    def train(self, run: Run, state: TrainState, start, partial_epoch) -> TrainState:
        """Trains round ``start.segment`` from ``start``; round 0 records the rewind point."""
        round_index, opts = start.segment, self.options
        if round_index == 0:
            taken = self.rounds.round_zero(run, state)
            if taken is not None:
                return taken
        searching = self.search is not None and round_index + 1 < opts.rounds
        if self.search is not None and self.search.begin_round(state, start, searching):
            return state  # resumed where the early-bird rule had ended this round

        def on_epoch_end(state, done):
            if round_index == 0 and done == opts.rewind_epoch:
                self.rewind = rewind_point(state)
            # round 0 runs at least to its rewind point
            if searching and (round_index > 0 or done >= opts.rewind_epoch):
                return self.search.on_epoch_end(state, round_index, done)

        return run.train_segment(state, start, partial_epoch, on_epoch_end)

    def entry(self, run: Run, state: TrainState, segment: int) -> dict:
        if segment >= 1 and self.options.sparsity_type != patterns.UNSTRUCTURED:  # the ticket keeps the pattern
            patterns.check_pattern(state.masks, self.options.sparsity_type)
        return {"round": segment, "sparsity": run.trainer.sparsity(state, self.rule),
                "sparsity_target": sparsity_target(self.options, segment),
                "layer_sparsity": M.layer_sparsity_of(state.masks),
                **(self.search.round_entry(segment) if self.search else {})}

    def ticket_path(self, run: Run, segment: int) -> str:
        return round_path(run.workdir, segment)

    def next_segment(self, run: Run, state: TrainState, segment: int) -> TrainState:
        """Round ``segment``'s variables (pruned and rewound, or the control's), a fresh optimizer."""
        v = self.rounds.round_variables(run, state, segment)
        state = state.replace(weights=v.weights, masks=v.masks, bn=v.bn, batch_stats=v.batch_stats)
        return run.fresh_optimizer(state, self.rule, self.config.seed + segment)

    # -- pruning ------------------------------------------------------------------------------
    def scores(self, run: Run, state: TrainState, trained_round: int | None = None, save: bool = True) -> dict:
        """The criterion's scores for the current (trained) state, from exactly the inputs it declares.

        Firing statistics, when gathered, are saved as WORKDIR/firing_stats_round{trained_round}.npz.
        """
        calibration = criteria.Calibration(run.trainer, state, self.rule, self.options.calibration_batches,
                                           self.config.seed, round_index=trained_round or 0)
        inputs = criteria.gather_inputs(self.options.criterion, calibration)
        if save and "stats" in inputs and trained_round is not None and is_primary():
            np.savez(os.path.join(run.workdir, f"firing_stats_round{trained_round}.npz"),
                     **{f"{path}:{k}": v for path, entry in inputs["stats"].items() for k, v in entry.items()})
        return criteria.scores(self.options.criterion, state.weights, inputs)

    def would_be_masks(self, run: Run, state: TrainState, round_index: int, save: bool = False):
        """The masks pruning the current state would give for ``round_index``."""
        scores = self.scores(run, state, trained_round=round_index - 1, save=save)
        magnitudes = criteria.scores("magnitude", state.weights, {})
        return next_masks(scores, state.masks, self.options, round_index, magnitudes, self.rule.dns_layers)

    # -- results ------------------------------------------------------------------------------
    def results_fields(self) -> dict:
        o, c = self.options, self.config
        kind = {"sparsity_type": o.sparsity_type} if o.sparsity_type != patterns.UNSTRUCTURED else {}
        return {"criterion": o.criterion, "dns": o.dns, "scope": o.scope, "dataset": c.dataset, "model": c.model,
                "seed": c.seed, "control": o.control, "ticket_dir": o.ticket_dir, "early_bird": o.early_bird, **kind}

    def figures(self, run: Run, results: dict) -> None:
        title = f"{self.label} on {self.config.dataset}"
        plots.accuracy_vs_sparsity({self.label: [[(r["sparsity"], r["test_accuracy"]) for r in results["runs"]]]},
                                   os.path.join(run.workdir, "accuracy_vs_sparsity.png"), x_axis="remaining",
                                   title=title)
        entries_figure({self.label: [results["runs"]]}, os.path.join(run.workdir, "accuracy_vs_energy.png"),
                       title=title)
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"), group_key="round",
                              title=self.label)


def run(config: TrainConfig, options: IMPOptions, workdir: str, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """One IMP run; a control without a ticket run first runs its ticket in WORKDIR/ticket."""
    if options.control and not options.ticket_dir:
        ticket_dir = os.path.join(workdir, "ticket")
        Run(IMPPlan(config, dataclasses.replace(options, control=None)), config, ticket_dir, trainer=trainer,
            outputs=outputs, hooks=hooks).execute()
        options = dataclasses.replace(options, ticket_dir=ticket_dir)
    return Run(IMPPlan(config, options), config, workdir, trainer=trainer, outputs=outputs, hooks=hooks).execute()
