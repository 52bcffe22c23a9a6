"""Shi et al.'s weight and neuron mask learning as published (ICLR 2024; jsnn/sparsity/connection_penalty.py has
the math and the reference code it follows): a search segment and a finetune segment.

    segment 0 (search)    weights and BN (Adam), a logit per weight m_w and per gated neuron position m_n (Adam,
                          their own optimizer) trained together; loss = task + lambda * sum_blocks [c_n sum
                          sigma(beta m_n) + c_w sum sigma(beta m_w)], lambda fixed, beta 5 -> 1000 over the
                          search's iterations (jsnn/sparsity/shi_training.py). Ticket: WORKDIR/tickets/round_00.npz
    switch                masks fixed to m > 0 (weights: the kernel masks; neurons: the gates every later pass
                          applies, Variables.gates); pruned weights stored as 0 and their optimizer moments zeroed
    segment 1 (finetune)  masks fixed, weights and BN trained on with the same optimizer state for
                          ``finetune_epochs``: WORKDIR/ticket.npz

No budget and no repair: what the search leaves is the ticket. Where jsnn differs from the reference code
(``differences`` below, recorded in results.json): the task loss is jsnn's (cross-entropy of each timestep's
logits of a linear readout; theirs on CIFAR-10: MSE of 100 spiking outputs voted in groups of 10); the last
finetune epoch is the result (theirs keeps the epoch with the best test accuracy, which selects on the test
set); one temperature for weights and neurons (their two-value ``--temp-scheduler``); the learning-rate
schedule is the TrainConfig's over both phases (theirs: constant on CIFAR-10, ``--schedule constant``).

Defaults (``jsnn.config.SHI_PRESETS``, ``PRESETS["shi"]``): their CIFAR-10 ones on CIFAR (lambda 1e-11, masks
at Adam 1e-4, 200 finetune epochs after 800); digits: lambda 1e-6, masks at Adam 1e-2, 5 finetune epochs after
15, weights at Adam 1e-3.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax

from jsnn.config import SHI_PRESETS, TrainConfig, setting, with_option_presets
from jsnn.metrics import log
from jsnn.models.description import describe
from jsnn.runs.mask_search import SEGMENTS, SearchThenFinetune, check_search_options, switch_state
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Run
from jsnn.runs.sparse_training import OPTIMIZERS
from jsnn.runs.tickets import variables_of
from jsnn.sparsity import connection_penalty, shi_training
from jsnn.sparsity.masks import layer_sparsity_of, sparsity_of
from jsnn.trainer import TrainState
from jsnn.training_rules import masks_in_use
from jsnn.variables import by_name, init_variables

GROUP = "Shi et al. mask learning"
DIFFERENCES = (
    "task loss: cross-entropy of each timestep's logits of jsnn's linear readout (theirs on CIFAR-10: MSE of 100 "
    "spiking outputs voted in groups of 10)",
    "the last finetune epoch is the result (theirs: the epoch with the best test accuracy)",
    "one temperature schedule for weights and neurons (their two-value --temp-scheduler)",
    "the learning-rate schedule is the TrainConfig's, over search and finetune together",
)


@dataclasses.dataclass(frozen=True)
class ShiOptions:
    """Shi et al.'s own settings; ``train/shi.py`` has one flag per field (their ``main.py`` flag in brackets)."""

    penalty_lambda: float | None = setting(None, "lambda, the penalty's fixed weight [--penalty-lmbda] (unset: the "
                                           f"dataset's preset, {SHI_PRESETS['digits']['penalty_lambda']:g} on "
                                           "digits)", group=GROUP)
    finetune_epochs: int | None = setting(None, "epochs of finetuning after the --epochs of search "
                                          "[--epoch-finetune] (unset: "
                                          f"{SHI_PRESETS['digits']['finetune_epochs']} on digits; at most --epochs)",
                                          group=GROUP)
    mask_lr: float | None = setting(None, "Adam's learning rate for the logits [--prune-lr] (unset: the dataset's "
                                    "preset)", group=GROUP)
    mask_weight_decay: float = setting(0.0, "the logits' weight decay, added to their gradient "
                                       "[--prune-weight-decay]", group=GROUP)
    mask_init: float = setting(0.0, "the logits' initial value, weights and neurons [--mask-init-factor]: at 0 "
                               "sigma is 0.5 and m > 0 keeps nothing", group=GROUP)
    beta0: float = setting(connection_penalty.BETA0, "the sigmoid temperature at the start of the search", group=GROUP)
    beta1: float = setting(connection_penalty.BETA1, "the temperature at its end (every later step)", group=GROUP)
    optimizer: str = setting("adam", "the weights' optimizer [--optimizer]: adam (theirs), adamw or sgd (the "
                             "TrainConfig's)", group=GROUP, choices=OPTIMIZERS)

    def resolve(self, config: TrainConfig) -> "ShiOptions":
        out = with_option_presets(self, "shi", config.dataset)
        if not out.penalty_lambda >= 0:
            raise ValueError(f"--penalty-lambda must be >= 0, got {out.penalty_lambda}")
        check_search_options(out, config)
        if not out.mask_lr > 0:
            raise ValueError(f"--mask-lr must be > 0, got {out.mask_lr}")
        if not out.mask_weight_decay >= 0:
            raise ValueError(f"--mask-weight-decay must be >= 0, got {out.mask_weight_decay}")
        return out


def label(options: ShiOptions) -> str:
    return f"Shi et al. masks (lambda {options.penalty_lambda:g})"


@functools.lru_cache(maxsize=None)
def _shi_optimizer(weights: optax.GradientTransformation, mask_lr: float, mask_weight_decay: float):
    return shi_training.optimizer(weights, mask_lr, mask_weight_decay)


def neuron_counts(gates: dict) -> dict[str, dict[str, int]]:
    """{producer: {"kept": n, "neurons": N}} of binary gates ({producer: gate})."""
    return {k: {"kept": int(np.count_nonzero(np.asarray(g))), "neurons": int(np.asarray(g).size)}
            for k, g in gates.items()}


class ShiPlan(SearchThenFinetune):
    """Search, then finetune (module doc); segment k's entry is round k."""

    name = "shi"

    def __init__(self, config: TrainConfig, options: ShiOptions):
        super().__init__(config, options, shi_training.ShiFinetune())
        self.label = label(self.options)
        self.search: shi_training.ShiSearch | None = None
        self.layers: tuple = ()

    def mask_optimizer(self, weights: optax.GradientTransformation) -> optax.GradientTransformation:
        """The weights' optimizer (``options.optimizer``, the TrainConfig's lr and schedule over both phases) and
        the logits' Adam."""
        return _shi_optimizer(weights, self.options.mask_lr, self.options.mask_weight_decay)

    def setup(self, run: Run) -> TrainState:
        o, cfg = self.options, self.config
        self.layers = tuple(describe(run.model, run.dataset.image_shape))
        c_w, c_n = connection_penalty.usage_constants(connection_penalty.blocks_of(self.layers))
        gated = connection_penalty.gated_producers(self.layers)
        self.search = shi_training.ShiSearch(tuple(sorted(c_w.items())),
                                             tuple(sorted((k, v) for k, v in c_n.items() if k in gated)),
                                             o.penalty_lambda, cfg.epochs * run.trainer.steps_per_epoch,
                                             o.beta0, o.beta1)
        v = init_variables(run.model, jax.random.key(cfg.seed), (1,) + run.dataset.image_shape)
        logits = connection_penalty.init_logits(v.masks, self.layers, o.mask_init, o.mask_init)
        return run.new_state(v, logits, self.search)

    def search_epoch_end(self, state: TrainState, done: int) -> None:
        kept = 1.0 - sparsity_of(masks_in_use(self.search, state.masks, state.scores))
        neurons = neuron_counts(by_name(jax.device_get(self.search.effective_gates(state.scores))))
        alive = sum(c["kept"] for c in neurons.values()) / max(1, sum(c["neurons"] for c in neurons.values()))
        log(f"search epoch {done}: weights kept {kept:.4f}, neurons kept {alive:.4f} (m > 0)")

    def next_segment(self, run: Run, state: TrainState, segment: int) -> TrainState:
        """The switch: masks m > 0 fixed, pruned weights and their moments zeroed (the gates stay the logits'
        m_n > 0, frozen from here on)."""
        masks = jax.device_get(masks_in_use(self.search, state.masks, state.scores))
        self.segment = 1
        return switch_state(state, masks, run.trainer.mesh)

    def entry(self, run: Run, state: TrainState, segment: int) -> dict:
        rule = self.current_rule()
        v = jax.device_get(variables_of(state, rule))
        gates = by_name(v.gates)
        kept = by_name(v.masks)
        conn, total = connection_penalty.connections(self.layers, kept, gates)
        neurons = neuron_counts(gates)
        return {"round": segment, "phase": SEGMENTS[segment], "sparsity": sparsity_of(v.masks),
                "layer_sparsity": layer_sparsity_of(v.masks), "penalty_lambda": self.options.penalty_lambda,
                "connections": conn, "dense_connections": total, "connection_fraction": conn / total,
                "neurons_kept": neurons,
                "neuron_fraction": (sum(c["kept"] for c in neurons.values())
                                    / max(1, sum(c["neurons"] for c in neurons.values()))),
                "empty_layers": sorted(k for k, m in kept.items() if not np.any(np.asarray(m))),
                "epochs": self.segment_epochs(segment)}

    def results_fields(self) -> dict:
        return {"options": dataclasses.asdict(self.options), "differences": list(DIFFERENCES),
                "usage_constants": {"c_w": dict(self.search.c_w) if self.search else {},
                                    "c_n": dict(self.search.c_n) if self.search else {}}}


def run(config: TrainConfig, options: ShiOptions, workdir: str, *, trainer=None, outputs: Outputs = Outputs(),
        hooks: RunHooks = RunHooks()) -> dict:
    """One run of Shi et al.'s method in ``workdir`` (resumable); results.json's dict."""
    return Run(ShiPlan(config, options), config, workdir, trainer=trainer, outputs=outputs, hooks=hooks).execute()
