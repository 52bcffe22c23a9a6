"""The dense SNN with trained weights: the reference every pruning method is compared with."""
from __future__ import annotations

import dataclasses
import os

import jax

from jsnn import plots
from jsnn.config import TrainConfig
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Plan, Run
from jsnn.runs.workdir import run_signature
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables


@dataclasses.dataclass(frozen=True)
class DenseOptions:
    """The dense network has no options of its own: everything is in the TrainConfig."""

    def resolve(self, config: TrainConfig) -> "DenseOptions":
        return self


def dense_signature(config: TrainConfig) -> dict:
    return run_signature("dense", config)


class DensePlan(Plan):
    """One segment of weight training, no masks (all-ones)."""

    name, label = "dense", "dense (weights trained)"
    rule = MaskedTraining()

    def setup(self, run: Run):
        variables = init_variables(run.model, jax.random.key(self.config.seed), (1,) + run.dataset.image_shape)
        return run.new_state(variables, {}, self.rule)

    def entry_label(self, entry: dict) -> str:
        return "dense"  # under any plan name (the theory experiments' network)

    def figures(self, run: Run, results):
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"), title="dense SNN")


def run(config: TrainConfig, options: DenseOptions, workdir: str, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """Trains the weights of a dense SNN (resumable); returns results.json's dict."""
    return Run(DensePlan(config, options), config, workdir, trainer=trainer, outputs=outputs, hooks=hooks).execute()


def train_dense(config: TrainConfig, workdir: str, **kw) -> dict:
    """The one results entry of the dense run in ``workdir``."""
    return run(config, DenseOptions(), workdir, **kw)["runs"][0]
