"""Sparse training from scratch: SET (Mocanu et al. 2018), RigL (Evci et al., ICML 2020), or one-shot
pruning at initialisation (SNIP, Lee et al. 2019; random; magnitude), one segment.

The network starts sparse (ERK or uniform per-layer densities, random positions, exact counts) and
stays at that sparsity; every ``update_every`` steps up to ``end_fraction`` of training each layer
drops its smallest-magnitude weights and grows as many (random for SET, largest dense gradient for
RigL), inside the jitted train step (``jsnn.training_rules.DynamicSparseTraining``, ``jsnn/sparsity/dynamic.py``).
The ticket is the final sparse network (WORKDIR/ticket.npz, like a dense run's).

``static``: the mask is drawn once at initialisation by a criterion of ``jsnn.sparsity.criteria``
(its inputs gathered from the initial weights and ``calibration_batches`` training batches, as IMP
gathers them from a trained state: SNIP's |w * dL/dw| at init) and a distribution (the criterion's
own unless given: global for SNIP, as Lee et al. rank all connections at once); the mask then stays
fixed while the weights train (``MaskedTraining``: pruned weights stay exactly 0). The weights start
from IMP's initialisation of the same seed (``jax.random.key(seed)``), so the two compare per seed.

Defaults and where they come from (RigL's paper and rigl-TF, jaxpruner):
    sparsity 0.9, distribution erk   RigL's main setting (Evci et al. Sec. 4; rigl-TF ImageNet flags)
    drop_fraction 0.3                 rigl-TF's flag default (jaxpruner's dataclass default too)
    end_fraction 0.75                 RigL paper: updates stop at 75% of training (rigl-TF CIFAR-10: 75000
                                      of 97656 steps)
    update_every                      rigl-TF's 100 on CIFAR; digits: 10 (``jsnn.config``'s preset)
    optimizer sgd                     the TrainConfig's SGD (momentum, coupled weight decay, the schedule);
                                      adam / adamw as options here, so no TrainConfig signature changes
    static: criterion snip,           Lee et al.'s connection sensitivity, ranked globally; 10 calibration
      calibration_batches 10          batches (IMP's default for its criteria' inputs)
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import time

import jax
import numpy as np
import optax

from jsnn.config import SPARSE_TRAINING_UPDATE_EVERY, TrainConfig, setting, with_option_presets
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Plan, Run
from jsnn.runs.workdir import options_record, run_signature
from jsnn.sparsity import criteria, distributions, dynamic
from jsnn.sparsity.masks import check_sparsity, layer_sparsity_of
from jsnn.trainer import Trainer, learning_rate_schedule, make_optimizer
from jsnn.training_rules import DynamicSparseTraining, MaskedTraining
from jsnn.variables import Variables, init_variables, kernels

OPTIMIZERS = ("sgd", "adam", "adamw")
STATIC = "static"  # one-shot pruning at initialisation, the mask fixed afterwards
ALGORITHMS = dynamic.ALGORITHMS + (STATIC,)
LABELS = {"set": "SET", "rigl": "RigL"}
STATIC_LABELS = {"snip": "SNIP", "random": "random pruning at init", "magnitude": "magnitude pruning at init"}
STATIC_ONLY = ("criterion", "calibration_batches")  # options of static runs alone: not in set / rigl signatures


GROUP = "sparse training"


@dataclasses.dataclass(frozen=True)
class SparseTrainingOptions:
    """SET / RigL / static pruning's own settings; ``train/sparse_training.py`` has one flag per field."""

    algorithm: str = setting("rigl", "grow by random scores (SET) or by the largest dense gradient (RigL); static: "
                             "prune once at initialisation by --criterion, the mask fixed afterwards; energy: neurons "
                             "and weights pruned under --synops-budget (Shi et al. 2024, train/energy.py)",
                             group=GROUP, choices=ALGORITHMS)
    sparsity: float = setting(0.9, "fraction of the weights removed (RigL: 0.9)", group=GROUP)  # over all kernels
    # per-layer densities: erk (RigL's) or uniform; static: any distribution (None: erk for set / rigl, the
    # criterion's own for static)
    distribution: str | None = setting(None, "per-layer densities (unset: erk for set / rigl, which take erk or "
                                       "uniform; static: the criterion's own, global for snip)", group=GROUP,
                                       choices="distributions")
    # steps between mask updates (None: the dataset's preset)
    update_every: int | None = setting(None, "steps between mask updates (unset: rigl's 100 on CIFAR, "
                                       f"{SPARSE_TRAINING_UPDATE_EVERY['digits']} on digits)", group=GROUP)
    end_fraction: float = setting(0.75, "fraction of the training steps after which the masks stay fixed (RigL: "
                                  "0.75)", group=GROUP)
    drop_fraction: float = setting(0.3, "fraction of each layer's kept weights dropped at step 0, cosine-decayed "
                                   "(rigl: 0.3)", group=GROUP)  # alpha, cosine-decayed to 0 at the end step
    optimizer: str = setting("sgd", "sgd (momentum, weight decay added to the gradient), adam, or adamw (decoupled "
                             "decay); --lr and --weight-decay apply to each", group=GROUP, choices=OPTIMIZERS)
    criterion: str = setting("snip", "static: the criterion scoring the initial weights (snip: |w * dL/dw|, Lee et "
                             "al. 2019)", group=GROUP, choices="criteria")
    calibration_batches: int = setting(10, "static: training batches the criterion's inputs (snip: gradients) are "
                                       "averaged over", group=GROUP)

    def unrecorded(self) -> tuple[str, ...]:
        """The fields left out of the signature and config.json: the static-only ones in SET / RigL runs (which
        keep the signatures they had before static pruning existed)."""
        return STATIC_ONLY if self.algorithm != STATIC else ()

    def resolve(self, config: TrainConfig) -> "SparseTrainingOptions":
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        every = with_option_presets(self, "sparse_training", config.dataset).update_every
        distribution = self.distribution
        if distribution is None:
            distribution = criteria.criterion(self.criterion).distribution if self.algorithm == STATIC else "erk"
        out = dataclasses.replace(self, update_every=every, distribution=distribution)
        check_sparsity(out.sparsity)
        if out.algorithm == STATIC:
            criteria.criterion(out.criterion)  # a known one
            if out.distribution not in distributions.DISTRIBUTIONS:
                raise ValueError(f"--distribution must be one of {sorted(distributions.DISTRIBUTIONS)}, "
                                 f"got {out.distribution!r}")
            if out.calibration_batches < 1:
                raise ValueError(f"--calibration-batches must be >= 1, got {out.calibration_batches}")
        elif out.distribution not in distributions.SHAPE_DENSITIES:
            raise ValueError(f"--distribution must be one of {sorted(distributions.SHAPE_DENSITIES)} for "
                             f"{out.algorithm} (its masks are drawn before any score exists), got {out.distribution!r}")
        if out.update_every < 1:
            raise ValueError(f"--update-every must be >= 1, got {out.update_every}")
        if not 0.0 <= out.end_fraction <= 1.0:
            raise ValueError(f"--end-fraction must lie in [0, 1], got {out.end_fraction}")
        if not 0.0 <= out.drop_fraction <= 1.0:
            raise ValueError(f"--drop-fraction must lie in [0, 1], got {out.drop_fraction}")
        if out.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {out.optimizer!r}")
        return out


def sparse_optimizer(name: str, config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """sgd: the trainer's (weight decay added to the gradient, then momentum); adam: the same L2 then Adam;
    adamw: decoupled weight decay (optax.adamw). Learning rate and schedule from the TrainConfig."""
    if name == "sgd":
        return make_optimizer(config, steps_per_epoch)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    if name == "adam":
        return optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(schedule))
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


@functools.lru_cache(maxsize=None)
def _shared_optimizer(name: str, steps_per_epoch: int, lr: float, epochs: int, schedule: str, momentum: float,
                      weight_decay: float) -> optax.GradientTransformation:
    return sparse_optimizer(name, TrainConfig(lr=lr, epochs=epochs, schedule=schedule, momentum=momentum,
                                              weight_decay=weight_decay), steps_per_epoch)


def shared_optimizer(name: str, config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """``sparse_optimizer``, one object per setting: runs that share a trainer share its compiled step (the
    trainer compiles one step per training rule and optimizer)."""
    return _shared_optimizer(name, steps_per_epoch, config.lr, config.epochs, config.schedule, config.momentum,
                             config.weight_decay)


def with_optimizer(trainer: Trainer, optimizer: optax.GradientTransformation) -> Trainer:
    """A copy of ``trainer`` (same model, data, mesh) whose own optimizer is ``optimizer``, its own jit cache
    (for stepping a trainer by hand; a run takes its plan's optimizer, ``Plan.optimizer``)."""
    out = copy.copy(trainer)
    out.optimizer, out.jit_cache = optimizer, {}
    return out


def label(options: SparseTrainingOptions) -> str:
    if options.algorithm == STATIC:
        return f"{STATIC_LABELS.get(options.criterion, options.criterion + ' at init')} ({options.distribution})"
    return f"{LABELS.get(options.algorithm, options.algorithm)} ({options.distribution})"


def signature_of(config: TrainConfig, options: SparseTrainingOptions) -> dict:
    """The run's signature (the static-only fields only in static runs, ``SparseTrainingOptions.unrecorded``)."""
    return run_signature("sparse_training", config, options)


def masks_at_init(trainer: Trainer, state, options: SparseTrainingOptions, seed: int):
    """The static run's masks: ``options.criterion``'s scores of ``state`` (the initial, dense
    network, all-ones masks) from exactly the inputs it declares, kept at ``1 - options.sparsity``
    by ``options.distribution`` (``distributions.prune``, as IMP's rounds)."""
    rule = MaskedTraining()
    calibration = criteria.Calibration(trainer, state, rule, options.calibration_batches, seed)
    scores = criteria.scores(options.criterion, state.weights, criteria.gather_inputs(options.criterion, calibration))
    magnitudes = criteria.scores("magnitude", state.weights, {})
    return distributions.prune(options.distribution, scores, state.masks, 1.0 - options.sparsity, magnitudes)


class SparseTrainingPlan(Plan):
    """One segment: the weights trained under masks that SET / RigL update inside the step."""

    name = "sparse_training"
    rule: DynamicSparseTraining | None = None

    def __init__(self, config: TrainConfig, options: SparseTrainingOptions):
        super().__init__(config, options.resolve(config))
        self.label = label(self.options)

    def total_steps(self, run: Run) -> int:
        return self.config.epochs * run.trainer.steps_per_epoch

    def optimizer(self, trainer: Trainer) -> optax.GradientTransformation | None:
        """``options.optimizer`` (sgd: the TrainConfig's, the trainer's own)."""
        if self.options.optimizer == "sgd":
            return None
        return shared_optimizer(self.options.optimizer, self.config, trainer.steps_per_epoch)

    def setup(self, run: Run):
        o = self.options
        key_weights, key_masks = jax.random.split(jax.random.key(self.config.seed))
        v = init_variables(run.model, key_weights, (1,) + run.dataset.image_shape)
        masks = dynamic.initial_masks(key_masks, v.masks, o.sparsity, o.distribution)
        variables = Variables(dynamic.remask(v.weights, masks), masks, v.bn, v.batch_stats)
        end_step = int(o.end_fraction * self.total_steps(run))
        self.rule = DynamicSparseTraining(o.algorithm, o.drop_fraction, o.update_every, end_step)
        return run.new_state(variables, {}, self.rule)

    def sparsity_fields(self, run: Run, state) -> dict:
        """The measured sparsity of masks and kernels, and the pruned weights that are not 0 (none)."""
        masks = jax.tree.map(np.asarray, state.masks)
        weights = [np.asarray(k) for k in jax.tree.leaves(kernels(state.weights))]
        zeros = sum(int(np.sum(k == 0)) for k in weights)
        off_mask_nonzero = sum(int(np.count_nonzero(k[np.asarray(m) == 0]))
                               for k, m in zip(weights, jax.tree.leaves(masks)))
        return {"sparsity": run.trainer.sparsity(state, self.rule), "sparsity_target": self.options.sparsity,
                "layer_sparsity": layer_sparsity_of(masks), "weight_sparsity": zeros / sum(k.size for k in weights),
                "pruned_nonzero_weights": off_mask_nonzero}

    def entry(self, run: Run, state, segment):
        updates = dynamic.update_steps(self.total_steps(run), self.rule.update_every, self.rule.end_step)
        return {**self.sparsity_fields(run, state), "mask_updates": len(updates), "end_step": self.rule.end_step,
                "epochs": self.config.epochs, "algorithm": self.options.algorithm}

    def results_fields(self):
        return {"options": options_record(self.options)}


class StaticPruningPlan(SparseTrainingPlan):
    """One segment: the weights trained under masks drawn once at initialisation (``masks_at_init``)."""

    def setup(self, run: Run):
        self.rule = MaskedTraining()
        v = init_variables(run.model, jax.random.key(self.config.seed), (1,) + run.dataset.image_shape)
        dense = run.new_state(v, {}, self.rule)
        start = time.perf_counter()
        masks = jax.tree.map(np.asarray, masks_at_init(run.trainer, dense, self.options, self.config.seed))
        self.scoring_seconds = time.perf_counter() - start
        variables = Variables(dynamic.remask(v.weights, masks), masks, v.bn, v.batch_stats)
        return run.new_state(variables, {}, self.rule)

    def entry(self, run: Run, state, segment):
        return {**self.sparsity_fields(run, state), "epochs": self.config.epochs, "algorithm": STATIC,
                "criterion": self.options.criterion, "distribution": self.options.distribution,
                # the calibration pass of the process that drew the masks (a resumed run draws them again)
                "scoring_seconds": self.scoring_seconds}


def plan_of(config: TrainConfig, options: SparseTrainingOptions) -> SparseTrainingPlan:
    return (StaticPruningPlan if options.algorithm == STATIC else SparseTrainingPlan)(config, options)


def run(config: TrainConfig, options: SparseTrainingOptions, workdir: str, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """One SET / RigL / static run in ``workdir`` (resumable); results.json's dict."""
    return Run(plan_of(config, options), config, workdir, trainer=trainer, outputs=outputs, hooks=hooks).execute()
