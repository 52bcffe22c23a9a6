"""A SynOps-budget variant of Shi et al.'s weight and neuron mask learning (ICLR 2024; the differences are
listed in jsnn/sparsity/gated_synops.py): a search segment and a finetune segment, ending with a connected ticket
whose SynOps per training image are within ``--synops-budget``, or ``within_budget: false`` and one line.

    segment 0 (search)    weights, weight logits m_w, channel logits m_n and lambda trained together;
                          loss = task + lambda * S / target, S the differentiable SynOps count, beta
                          annealed 5 -> 1000, lambda adapted to the target by dual ascent
                          (jsnn/sparsity/energy_training.py). Ticket: WORKDIR/tickets/round_00.npz
    switch                masks m > 0; a pruned channel's fan-in and fan-out masked; pruned weights
                          stored as 0 and their optimizer moments zeroed; then the ticket's SynOps
                          measured (jsnn.efficiency on the training images) and, if over the search's
                          target (``target_fraction`` of the budget, room for the finetune),
                          cut layer by layer, smallest |w| first, never through the spine (one path
                          through every counted layer) until within it (jsnn/sparsity/gated_synops.py)
    segment 1 (finetune)  masks fixed, weights and BN trained on (same optimizer state) for
                          ``finetune_epochs``; measured again and cut again if over the budget (no
                          training after that cut): WORKDIR/ticket.npz, measured <= budget, or
                          within_budget false and one line where no connected ticket is

The budget is checked on the training images (the test set stays unseen until the run's cost report,
whose count can differ a little). The search aims at
``target_fraction`` of the budget, leaving room for the activity to shift when the masks are
binarised and the weights finetuned.

Defaults and where they come from (Shi et al.'s reference code, xyshi2000/Unstructured-Pruning @ 175134e):
    beta0 5, beta1 1000             Shi et al.'s temperature schedule, over all search steps
    logit_init 0.5                  Shi et al. start at 0 (sigma = 0.5, and m > 0 prunes all); a small positive
                                    value starts from the dense ticket (sigma(beta0 * 0.5) = 0.92)
    mask_lr                         Shi et al.: Adam 1e-4 (CIFAR-10, 800 epochs), 1e-3 (DVS); digits: 0.01
                                    (its 330 search steps), ``jsnn.config.METHOD_PRESETS``
    finetune_epochs                 Shi et al.: 800 + 200 epochs on CIFAR-10 (a quarter); digits 5 after 15
    target_fraction 0.9, lambda_init 0.01, dual_rate 0.05  jsnn's (Shi et al. fix lambda per run instead); lambda
                                    0.1 collapsed 8-epoch digits searches (every logit below 0 at once)
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax

from jsnn import data as jdata
from jsnn.config import ENERGY_PRESETS, TrainConfig, setting, with_option_presets
from jsnn.efficiency import measure
from jsnn.metrics import log
from jsnn.models.description import describe
from jsnn.objective import preprocess
from jsnn.runs.mask_search import SEGMENTS, SearchThenFinetune, check_search_options, switch_state
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Run
from jsnn.runs.sparse_training import OPTIMIZERS, shared_optimizer, with_optimizer  # noqa: F401 (tests)
from jsnn.sparsity import energy_training, gated_synops
from jsnn.sparsity.masks import layer_sparsity_of, sparsity_of
from jsnn.trainer import TrainState
from jsnn.training_rules import masks_in_use
from jsnn.variables import Variables, by_name, from_names, init_variables

GROUP = "energy budget"
CUT_RANKS = ("magnitude", "logits")


@dataclasses.dataclass(frozen=True)
class EnergyOptions:
    """The energy-budget method's own settings; ``train/energy.py`` has one flag per field."""

    synops_budget: float | None = setting(None, "SynOps per image the final ticket may need, measured on the "
                                          "training images as the cost report counts them (required)", group=GROUP)
    finetune_epochs: int | None = setting(None, "epochs of finetuning after the --epochs of search (unset: "
                                          f"{ENERGY_PRESETS['digits']['finetune_epochs']} on digits; at most "
                                          "--epochs)", group=GROUP)
    target_fraction: float = setting(0.9, "the search aims at this fraction of the budget", group=GROUP)
    beta0: float = setting(gated_synops.BETA0, "the sigmoid temperature at the start of the search", group=GROUP)
    beta1: float = setting(gated_synops.BETA1, "the sigmoid temperature at its end", group=GROUP)
    mask_lr: float | None = setting(None, "Adam's learning rate for the logits (unset: the dataset's preset)",
                                    group=GROUP)
    logit_init: float = setting(0.5, "the logits' initial value", group=GROUP)
    # the penalty starts near the task loss (0.1 collapsed 8-epoch searches)
    lambda_init: float = setting(0.01, "the multiplier's initial value", group=GROUP)
    dual_rate: float = setting(0.05, "eta of nu <- nu + eta clip(log(S / target), -1, 1), per step", group=GROUP)
    optimizer: str = setting("sgd", "the weights' optimizer: sgd (the TrainConfig's), adam or adamw", group=GROUP,
                             choices=OPTIMIZERS)
    cut_rank: str = setting("magnitude", "the budget cut's order within a layer: magnitude (|w|) or logits (the "
                            "search's)", group=GROUP, choices=CUT_RANKS)

    def resolve(self, config: TrainConfig) -> "EnergyOptions":
        out = with_option_presets(self, "energy", config.dataset)
        if out.synops_budget is None or not out.synops_budget > 0:
            raise ValueError(f"--synops-budget must be a number of SynOps per image > 0, got {out.synops_budget}")
        check_search_options(out, config)
        if not 0 < out.target_fraction <= 1:
            raise ValueError(f"--target-fraction must lie in (0, 1], got {out.target_fraction}")
        for name in ("mask_lr", "lambda_init", "dual_rate"):
            if not getattr(out, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(out, name)}")
        if out.cut_rank not in CUT_RANKS:
            raise ValueError(f"--cut-rank must be one of {CUT_RANKS}, got {out.cut_rank!r}")
        return out


def label(options: EnergyOptions) -> str:
    return f"energy budget ({options.synops_budget:g} SynOps)"


def silent_layers(report: dict) -> list[str]:
    """The counted layers (spike inputs) of a cost report that no spike reached: with a path through them
    still kept (the spine), the ticket's output no longer depends on its input there."""
    return sorted(r["layer"] for r in report["layers"] if r["input"] == "spikes" and r["acs_per_image"] == 0)


@functools.lru_cache(maxsize=None)
def _energy_optimizer(weights: optax.GradientTransformation, mask_lr: float, dual_rate: float):
    return energy_training.optimizer(weights, mask_lr, dual_rate)


class EnergyPlan(SearchThenFinetune):
    """Search, then finetune (module doc); segment k's entry is round k."""

    name = "energy"

    def __init__(self, config: TrainConfig, options: EnergyOptions):
        super().__init__(config, options, energy_training.EnergyFinetune())
        self.label = label(self.options)
        self.repairs: dict = {}  # {"switch" | "final": {"measured": [...], "removed_weights": n}}
        self.search: energy_training.EnergySearch | None = None
        self._usage = None  # the jitted per-weight input-spike count, built once

    # -- what the run starts from ---------------------------------------------------------------------
    def mask_optimizer(self, weights: optax.GradientTransformation) -> optax.GradientTransformation:
        """The weights' optimizer (``options.optimizer``) with the logits' Adam and lambda's dual step."""
        return _energy_optimizer(weights, self.options.mask_lr, self.options.dual_rate)

    def setup(self, run: Run) -> TrainState:
        o, cfg = self.options, self.config
        steps = run.trainer.steps_per_epoch
        layers = tuple(describe(run.model, run.dataset.image_shape))
        self.groups = gated_synops.neuron_groups(layers)
        self.search = energy_training.EnergySearch(self.groups, layers, o.target_fraction * o.synops_budget,
                                                   cfg.epochs * steps, o.beta0, o.beta1)
        v = init_variables(run.model, jax.random.key(cfg.seed), (1,) + run.dataset.image_shape)
        scores = energy_training.search_scores(v.masks, self.groups, o.logit_init, o.lambda_init)
        return run.new_state(v, scores, self.search)

    # -- checkpoints --------------------------------------------------------------------------------
    def restore(self, run: Run, state: TrainState, extra: dict, meta: dict) -> None:
        super().restore(run, state, extra, meta)
        self.repairs = meta.get("energy_repairs", {})

    def checkpoint_info(self) -> dict:
        return {"energy_repairs": self.repairs}

    # -- training -----------------------------------------------------------------------------------
    def search_epoch_end(self, state: TrainState, done: int) -> None:
        nu = float(np.asarray(state.scores["log_lambda"]))
        kept = 1.0 - sparsity_of(masks_in_use(self.search, state.masks, state.scores))
        log(f"search epoch {done}: lambda {np.exp(nu):.4g}, connections kept {kept:.4f}")

    def after_finetune(self, run: Run, state: TrainState) -> TrainState:
        return self.meet_budget(run, state, "final")

    def next_segment(self, run: Run, state: TrainState, segment: int) -> TrainState:
        """The switch: the binary ticket, pruned weights and their moments zeroed, then within the budget."""
        masks = gated_synops.ticket_masks(jax.device_get(state.scores), jax.device_get(state.masks), self.groups)
        state = self.with_masks(run, state, masks)
        self.segment = 1
        return self.meet_budget(run, state, "switch")

    def with_masks(self, run: Run, state: TrainState, masks) -> TrainState:
        return switch_state(state, masks, run.trainer.mesh)

    def cut_rank(self, host: TrainState) -> dict:
        if self.options.cut_rank == "logits":
            return gated_synops.weight_rank(host.scores, self.groups)
        return gated_synops.cut_rank(host.weights)

    def measure(self, run: Run, state: TrainState, masks) -> dict:
        """The cost report's count of the ticket on ``masks`` over the training images (the budget is a
        property of the ticket fitted on them; the test images stay unseen until the run's cost report)."""
        variables = Variables(state.weights, masks, state.bn, state.batch_stats)
        d = run.dataset
        return measure(run.model, jax.device_get(variables), d.train_images, batch_size=self.config.batch_size,
                       normalize=(d.mean, d.std))

    def meet_budget(self, run: Run, state: TrainState, when: str) -> TrainState:
        """``state`` with its masks cut layer by layer, cheapest first, until the SynOps measured on the training
        images are within the budget, never through the spine (``gated_synops.enforce_budget``)."""
        host = jax.device_get(state)
        if self._usage is None:
            self._usage = gated_synops.weight_usage_fn(run.model, self.search.layers)
        usage_of = self._usage
        d = run.dataset

        def usage(named):
            total = None
            variables = Variables(host.weights, from_names(named), host.bn, host.batch_stats)
            for images, _, n_real in jdata.eval_batches(d.train_images, d.train_labels, self.config.batch_size):
                x = preprocess(images[:n_real], d.mean, d.std)
                u = jax.device_get(usage_of(variables, x))
                total = u if total is None else {k: total[k] + u[k] for k in u}
            return {k: v / len(d.train_labels) for k, v in total.items()}

        last = {}  # the report of the last masks measured: the final ones

        def synops(named):
            last["report"] = self.measure(run, host, from_names(named))
            return last["report"]["synops_per_image"]

        # the switch cuts to the search's target (target_fraction of the budget): the finetune can raise the
        # activity, and a cut after the finetune has no training left to recover from it
        budget = self.options.synops_budget * (self.options.target_fraction if when == "switch" else 1.0)
        result = gated_synops.enforce_budget(by_name(host.masks), budget, self.cut_rank(host),
                                       self.groups, synops, usage)
        self.repairs = {**self.repairs, when: {"measured": list(result.measured), "met": result.met,
                                               "removed_weights": result.removed_weights,
                                               "restored_weights": result.restored_weights,
                                               "silent_layers": silent_layers(last["report"])}}
        if result.restored_weights:
            log(f"{when}: the binarised logits left a counted layer without a path; restored "
                f"{result.restored_weights} weights of the spine (one path through every counted layer)")
        if result.removed_weights:
            log(f"{when}: {result.measured[0]:.0f} SynOps per training image over {budget:g}; removed "
                f"{result.removed_weights} weights layer by layer, cheapest first: {result.measured[-1]:.0f}")
        if when != "final":  # the final measurement decides; the finetune still changes the activity
            pass
        elif not result.met:
            log(f"{when}: no connected ticket within the budget: the smallest this run finds, one path through "
                f"every counted layer, needs {result.measured[-1]:.0f} SynOps per training image, over "
                f"{budget:g}; raise --synops-budget")
        elif self.repairs[when]["silent_layers"]:
            log(f"{when}: no connected ticket within the budget: no spike reaches "
                f"{', '.join(self.repairs[when]['silent_layers'])} on the training images, so the ticket cannot "
                f"tell inputs apart; raise --synops-budget")
        if result.restored_weights or result.removed_weights:
            state = self.with_masks(run, state, from_names(result.masks))
        return state

    # -- results ------------------------------------------------------------------------------------
    def entry(self, run: Run, state: TrainState, segment: int) -> dict:
        rule = self.current_rule()
        masks = jax.device_get(masks_in_use(rule, state.masks, state.scores))
        removed = gated_synops.removed_channels(masks, run.model, run.dataset.image_shape)
        nu = float(np.asarray(state.scores["log_lambda"]))
        out = {"round": segment, "phase": SEGMENTS[segment], "sparsity": sparsity_of(masks),
               "layer_sparsity": layer_sparsity_of(masks), "synops_budget": self.options.synops_budget,
               "lambda": float(np.exp(nu)), "removed_channels": {k: len(v) for k, v in removed.items()},
               "channels": {g.producer: g.channels for g in self.groups},
               "epochs": self.segment_epochs(segment)}
        if segment == 1:
            final = self.repairs["final"]
            empty = sorted(n for n, s in out["layer_sparsity"].items() if s >= 1.0)  # [] by the spine
            met = final.get("met", final["measured"][-1] <= self.options.synops_budget)  # older checkpoints: no "met"
            silent = final.get("silent_layers", [])
            out.update({"synops_per_image": final["measured"][-1], "synops_measured_on": "train",
                        "within_budget": bool(met) and not empty and not silent, "silent_layers": silent,
                        "disconnected_layers": empty,
                        "repairs": self.repairs})
        return out

    def results_fields(self) -> dict:
        return {"options": dataclasses.asdict(self.options)}


def run(config: TrainConfig, options: EnergyOptions, workdir: str, *, trainer=None, outputs: Outputs = Outputs(),
        hooks: RunHooks = RunHooks()) -> dict:
    """One energy-budget run in ``workdir`` (resumable); results.json's dict."""
    return Run(EnergyPlan(config, options), config, workdir, trainer=trainer, outputs=outputs, hooks=hooks).execute()
