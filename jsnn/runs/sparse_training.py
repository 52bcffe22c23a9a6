"""Sparse training from scratch: SET (Mocanu et al. 2018) and RigL (Evci et al., ICML 2020), one segment.

The network starts sparse (ERK or uniform per-layer densities, random positions, exact counts) and
stays at that sparsity; every ``update_every`` steps up to ``end_fraction`` of training each layer
drops its smallest-magnitude weights and grows as many (random for SET, largest dense gradient for
RigL), inside the jitted train step (``jsnn.methods.DynamicSparseTraining``, ``jsnn/sparsity/dynamic.py``).
The ticket is the final sparse network (WORKDIR/ticket.npz, like a dense run's).

Defaults and where they come from (``../shared/notes/sparse-training.md`` §2):
    sparsity 0.9, distribution erk   RigL's main setting (Evci et al. Sec. 4; rigl-TF ImageNet flags)
    drop_fraction 0.3                 rigl-TF's flag default (jaxpruner's dataclass default too)
    end_fraction 0.75                 RigL paper: updates stop at 75% of training (rigl-TF CIFAR-10: 75000
                                      of 97656 steps)
    update_every                      rigl-TF's 100 on CIFAR; digits: 10 (``jsnn.config``'s preset)
    optimizer sgd                     the TrainConfig's SGD (momentum, coupled weight decay, the schedule);
                                      adam / adamw as options here, so no TrainConfig signature changes
"""
from __future__ import annotations

import copy
import dataclasses
import os

import jax
import numpy as np
import optax

from jsnn import plots
from jsnn.config import METHOD_PRESETS, TrainConfig, dataset_family
from jsnn.methods import DynamicSparseTraining
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import OneSegmentPlan, Run
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import distributions, dynamic
from jsnn.sparsity.masks import check_sparsity, layer_sparsity_of
from jsnn.trainer import Trainer, learning_rate_schedule, make_optimizer
from jsnn.variables import Variables, init_variables, kernels, named_kernels

OPTIMIZERS = ("sgd", "adam", "adamw")
LABELS = {"set": "SET", "rigl": "RigL"}


@dataclasses.dataclass(frozen=True)
class SparseTrainingOptions:
    algorithm: str = "rigl"  # set | rigl
    sparsity: float = 0.9  # fraction REMOVED over all maskable kernels
    distribution: str = "erk"  # per-layer densities: erk (RigL's) or uniform
    update_every: int | None = None  # steps between mask updates (None: the dataset's preset)
    end_fraction: float = 0.75  # mask updates stop at this fraction of the training steps
    drop_fraction: float = 0.3  # alpha, cosine-decayed to 0 at the end step
    optimizer: str = "sgd"  # sgd (the TrainConfig's) | adam | adamw (lr and weight decay from the TrainConfig)

    def resolve(self, config: TrainConfig) -> "SparseTrainingOptions":
        every = self.update_every
        if every is None:
            presets = METHOD_PRESETS["sparse_training"]
            every = presets.get(dataset_family(config.dataset), presets["digits"])["update_every"]
        out = dataclasses.replace(self, update_every=every)
        if out.algorithm not in dynamic.ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {dynamic.ALGORITHMS}, got {out.algorithm!r}")
        check_sparsity(out.sparsity)
        if out.distribution not in distributions.SHAPE_DENSITIES:
            raise ValueError(f"--distribution must be one of {sorted(distributions.SHAPE_DENSITIES)}, "
                             f"got {out.distribution!r}")
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


def with_optimizer(trainer: Trainer, optimizer: optax.GradientTransformation) -> Trainer:
    """A copy of ``trainer`` (same model, data, mesh) stepping with ``optimizer``, its own jit cache."""
    out = copy.copy(trainer)
    out.optimizer, out.jit_cache = optimizer, {}
    return out


def label(options: SparseTrainingOptions) -> str:
    return f"{LABELS.get(options.algorithm, options.algorithm)} ({options.distribution})"


class SparseTrainingPlan(OneSegmentPlan):
    """One segment: the weights trained under masks that SET / RigL update inside the step."""

    name = "sparse_training"

    def __init__(self, config: TrainConfig, options: SparseTrainingOptions):
        self.config, self.options = config, options.resolve(config)
        self.signature = run_signature(self.name, config, self.options)
        self.label = label(self.options)
        self.method: DynamicSparseTraining | None = None

    def total_steps(self, run: Run) -> int:
        return self.config.epochs * run.trainer.steps_per_epoch

    def setup(self, run: Run):
        o = self.options
        if o.optimizer != "sgd":
            run.trainer = with_optimizer(run.trainer, sparse_optimizer(o.optimizer, self.config,
                                                                       run.trainer.steps_per_epoch))
        key_weights, key_masks = jax.random.split(jax.random.key(self.config.seed))
        v = init_variables(run.model, key_weights, (1,) + run.dataset.image_shape)
        masks = dynamic.initial_masks(key_masks, v.masks, o.sparsity, o.distribution)
        variables = Variables(dynamic.remask(v.weights, masks), masks, v.bn, v.batch_stats)
        end_step = int(o.end_fraction * self.total_steps(run))
        self.method = DynamicSparseTraining(o.algorithm, o.drop_fraction, o.update_every, end_step)
        return run.trainer.new_state(variables, {}, self.method, self.config.seed)

    def entry(self, run: Run, state, segment):
        masks = jax.tree.map(np.asarray, state.masks)
        zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in named_kernels(state.weights).values())
        total = sum(int(np.asarray(k).size) for k in named_kernels(state.weights).values())
        off_mask_nonzero = sum(int(np.count_nonzero(np.asarray(k)[np.asarray(m) == 0]))
                               for k, m in zip(jax.tree.leaves(kernels(state.weights)), jax.tree.leaves(masks)))
        updates = dynamic.update_steps(self.total_steps(run), self.method.update_every, self.method.end_step)
        return {"sparsity": run.trainer.sparsity(state, self.method), "sparsity_target": self.options.sparsity,
                "layer_sparsity": layer_sparsity_of(masks), "weight_sparsity": zeros / total,
                "pruned_nonzero_weights": off_mask_nonzero, "mask_updates": len(updates),
                "end_step": self.method.end_step, "epochs": self.config.epochs, "algorithm": self.options.algorithm}

    def results_fields(self):
        return {"options": dataclasses.asdict(self.options)}

    def figures(self, run: Run, results):
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"), title=self.label)


def run(config: TrainConfig, options: SparseTrainingOptions, workdir: str, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """One SET / RigL run in ``workdir`` (resumable); results.json's dict."""
    plan = SparseTrainingPlan(config, options)
    return Run(plan, config, workdir, trainer=trainer, outputs=outputs, hooks=hooks,
               record={**config.to_dict(), "sparse_training": dataclasses.asdict(plan.options)}).execute()
