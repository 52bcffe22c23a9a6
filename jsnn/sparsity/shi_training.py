"""The two phases of Shi et al.'s weight and neuron mask learning (jsnn/sparsity/connection_penalty.py) as
training rules (``jsnn.training_rules.TrainingRule``), and their optimizer.

| rule        | trained                      | forward                                                        |
|-------------|------------------------------|----------------------------------------------------------------|
| ShiSearch   | weights, bn, scores (logits) | kernel * sigma(beta_w m_w); LIF spikes * sigma(beta_n m_n)     |
| ShiFinetune | weights, bn (logits frozen)  | kernel * (m_w > 0) (the ticket's masks); spikes * (m_n > 0)    |

Search: loss = task + P, P = lambda * sum_blocks [c_n sum sigma(beta_n m_n) + c_w sum sigma(beta_w m_w)]
(``connection_penalty.penalty``), lambda fixed, beta = ``connection_penalty.temperature`` of the step (beta0 -> beta1
over the search's iterations, the same for weights and neurons: their two-value ``--temp-scheduler``). Both optimizers
step on the same gradients in one step (theirs: one backward, then the masks' step and the weights' step, which do not
read each other's update). Its evaluation and its ticket use the binary masks (m > 0): what the ticket is now.

Both phases keep one TrainState structure and one optimizer (``optax.multi_transform``: the weights' own and
Adam for the logits), so the weights' optimizer state carries over the switch as Shi et al. keep their Adam;
the finetune zeroes the updates of the logits and of every pruned weight (stored as exactly 0 at the switch).
"""
from __future__ import annotations

import dataclasses

import jax
import optax

from jsnn.objective import TrainingRuleDefaults, spike_loss
from jsnn.sparsity import connection_penalty
from jsnn.sparsity.energy_training import EnergyFinetune
from jsnn.variables import Variables, apply_model, by_name


@dataclasses.dataclass(frozen=True)
class ShiSearch(TrainingRuleDefaults):
    """The search phase (module doc). Hashable: a static argument of the jitted step; ``c_w`` and ``c_n`` are
    the usage constants as ((layer, c), ...)."""

    c_w: tuple[tuple[str, float], ...]
    c_n: tuple[tuple[str, float], ...]
    lam: float
    search_steps: int  # beta reaches beta1 here (Tmax: every search iteration)
    beta0: float = connection_penalty.BETA0
    beta1: float = connection_penalty.BETA1
    trainable: tuple[str, ...] = ("weights", "bn", "scores")

    def beta(self, step) -> jax.Array:
        return connection_penalty.temperature(step, self.beta0, self.beta1, 0, max(self.search_steps, 1))

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        return connection_penalty.binary_variables(weights, masks, scores, bn, batch_stats)

    def effective_masks(self, masks, scores):
        return self.forward_variables({}, masks, scores, {}, {}).masks

    def effective_gates(self, scores):
        return jax.tree.map(connection_penalty.binary_mask, scores["neurons"])

    def mask_updates(self, updates: dict, masks) -> dict:
        return updates

    def penalty(self, scores: dict, beta) -> jax.Array:
        return connection_penalty.penalty(by_name(scores["weights"]), by_name(scores["neurons"]), dict(self.c_w),
                                          dict(self.c_n), self.lam, beta, beta)

    def loss(self, model, state, images, labels):
        """(task loss + penalty, (logits, new batch statistics)) on the soft masks at this step's beta."""
        beta = self.beta(state.step)
        variables = connection_penalty.soft_variables(state.weights, state.masks, state.scores, state.bn,
                                                      state.batch_stats, beta, beta)
        logits, new_stats, _ = apply_model(model, variables, images, train=True)
        return spike_loss(logits, labels) + self.penalty(state.scores, beta), (logits, new_stats)


@dataclasses.dataclass(frozen=True)
class ShiFinetune(EnergyFinetune):
    """The finetune phase: the energy method's (the binary kernel masks in ``masks`` fixed, weights and BN
    trained, the logits frozen) with the gates m_n > 0 of the frozen logits."""

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        return Variables(weights, masks, bn, batch_stats, self.effective_gates(scores))

    def effective_gates(self, scores):
        return jax.tree.map(connection_penalty.binary_mask, scores["neurons"])


def optimizer(weights: optax.GradientTransformation, mask_lr: float,
              mask_weight_decay: float = 0.0) -> optax.GradientTransformation:
    """``weights`` for the weights and BN, ``connection_penalty.mask_optimizer`` (torch's Adam) for the logits."""

    def labels(trainable):
        return {k: jax.tree.map(lambda _: "logits" if k == "scores" else "weights", v) for k, v in trainable.items()}

    logits = connection_penalty.mask_optimizer(mask_lr, mask_weight_decay)
    return optax.multi_transform({"weights": weights, "logits": logits}, labels)
