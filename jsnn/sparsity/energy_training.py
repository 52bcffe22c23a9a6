"""The two phases of the SynOps-budget variant of Shi et al.'s mask learning as training rules
(``jsnn.training_rules.TrainingRule``), and their optimizer.

| rule           | trained                         | forward kernel                                        |
|----------------|---------------------------------|-------------------------------------------------------|
| EnergySearch   | weights, bn, scores (logits, nu)| weights * sigma(beta m_w) * sigma(beta m_n)[in-channel]|
| EnergyFinetune | weights, bn (scores frozen)     | weights * binary ticket mask                          |

Search (after Shi et al. 2024, not theirs: jsnn.sparsity.gated_synops lists the differences):
loss = task + lambda * S / B_target, S the differentiable SynOps per image
(``jsnn.sparsity.gated_synops.synops_per_image``) of the batch, B_target the budget the search aims at.
``lambda = exp(nu)`` is adapted inside the step by dual ascent on its logarithm,
``nu <- nu + eta * clip(log(S / B_target), -1, 1)`` (lambda grows while the batch is over the target,
shrinks while under, by at most a factor e^eta a step, so a search that starts far above the target
cannot blow lambda up in a few steps): ``nu`` enters the loss as ``nu * sg(gap) - sg(nu * gap)``
(value 0, gradient the gap) and
its optimizer is SGD with learning rate ``-eta`` (an ascent step), so the user gives a budget, not a
lambda, and lambda lives in the checkpointed state. beta follows ``gated_synops.temperature`` of the step.
The search's evaluation and its ticket use the binary gates (m > 0): what the ticket would be now.

Both phases keep one TrainState structure and one optimizer (its state carried across the switch, as
Shi et al. keep their Adam state): ``optax.multi_transform`` of the weights' optimizer, Adam for the
logits (Shi et al.: masks have their own Adam) and the dual SGD for nu. Finetune zeroes the updates of
the scores and of every pruned weight; the switch stores pruned weights as exactly 0, so they stay 0
under any optimizer (momentum, Adam, AdamW, weight decay).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jsnn.models.description import Layer
from jsnn.objective import TrainingRuleDefaults, spike_loss
from jsnn.sparsity import gated_synops
from jsnn.variables import Variables, by_name, from_names, kernels, map_with_names, with_kernels

# lambda is clipped to exp([-20, 20]): a long stretch under the budget cannot push nu to -inf
LOG_LAMBDA_RANGE = (-20.0, 20.0)
DUAL_GAP_FLOOR = 1e-6  # S = 0 (every counted connection gone) still gives a finite gap


def _forward_masks(masks, scores: dict, groups, beta) -> tuple[dict, dict]:
    """({layer: forward mask}, {layer: count mask}) of the soft gates at ``beta``."""
    weight_gates, neuron_gates = gated_synops.soft_gates(scores, beta)
    named = by_name(masks)
    soft = {k: named[k].astype(jnp.float32) * weight_gates[k] for k in named}
    forward = gated_synops.gated_masks(soft, neuron_gates, groups, fan_in=False)
    count = gated_synops.gated_masks(soft, neuron_gates, groups, fan_in=True)
    return forward, count


@dataclasses.dataclass(frozen=True)
class EnergySearch(TrainingRuleDefaults):
    """The search phase (module doc). Hashable: a static argument of the jitted step."""

    groups: tuple[gated_synops.NeuronGroup, ...]
    layers: tuple[Layer, ...]
    target: float  # SynOps per image the penalty aims at
    search_steps: int  # beta reaches beta1 here
    beta0: float = gated_synops.BETA0
    beta1: float = gated_synops.BETA1
    trainable: tuple[str, ...] = ("weights", "bn", "scores")

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        return Variables(weights, self.effective_masks(masks, scores), bn, batch_stats)

    def effective_masks(self, masks, scores):
        """The binary ticket the logits give now (``gated_synops.ticket_masks`` without the host-side clean-up)."""
        weight_gates, neuron_gates = gated_synops.binary_gates(scores)
        named = by_name(masks)
        gated = gated_synops.gated_masks({k: named[k] * weight_gates[k].astype(named[k].dtype) for k in named},
                                   neuron_gates, self.groups, fan_in=True)
        return from_names(gated)

    def mask_updates(self, updates: dict, masks) -> dict:
        return updates

    def loss(self, model, state, images, labels):
        """(task loss + penalty, (logits, new batch statistics)) of the state's trainable trees."""
        beta = gated_synops.temperature(state.step, self.search_steps, self.beta0, self.beta1)
        forward, count = _forward_masks(state.masks, state.scores, self.groups, beta)
        variables = Variables(state.weights, from_names(forward), state.bn, state.batch_stats)
        logits, new_stats, inputs = gated_synops.forward_with_inputs(model, variables, images, train=True)
        synops = gated_synops.synops_per_image(inputs, count, self.layers, labels.shape[0])
        excess = synops / self.target
        nu = state.scores["log_lambda"]
        lam = jnp.exp(jnp.clip(jax.lax.stop_gradient(nu), *LOG_LAMBDA_RANGE))
        # log S / target, clipped to [-1, 1]: multiplicative steps of lambda, at most e^eta per step
        gap = jax.lax.stop_gradient(jnp.clip(jnp.log(jnp.maximum(excess, DUAL_GAP_FLOOR)), -1.0, 1.0))
        dual = nu * gap - jax.lax.stop_gradient(nu * gap)  # value 0; d/dnu = the gap
        return spike_loss(logits, labels) + lam * excess + dual, (logits, new_stats)


@dataclasses.dataclass(frozen=True)
class EnergyFinetune(TrainingRuleDefaults):
    """The finetune phase: the binary ticket in ``masks``, fixed; weights and BN train, scores frozen."""

    trainable: tuple[str, ...] = ("weights", "bn", "scores")

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        return Variables(weights, masks, bn, batch_stats)

    def effective_masks(self, masks, scores):
        return masks

    def mask_updates(self, updates: dict, masks) -> dict:
        kept = map_with_names(lambda _, u, m: u * m.astype(u.dtype), kernels(updates["weights"]), masks)
        return {**updates, "weights": with_kernels(updates["weights"], kept),
                "scores": jax.tree.map(jnp.zeros_like, updates["scores"])}


def search_scores(like_masks, groups, logit_init: float, lambda_init: float) -> dict:
    """The search's ``scores``: every weight's and gated channel's logit, and nu = log lambda."""
    return {**gated_synops.init_logits(like_masks, groups, logit_init),
            "log_lambda": jnp.asarray(jnp.log(lambda_init), jnp.float32)}


def optimizer(weights: optax.GradientTransformation, mask_lr: float, dual_rate: float) -> optax.GradientTransformation:
    """``weights`` for weights and BN, Adam(``mask_lr``) for the logits, SGD(-``dual_rate``) for nu."""

    def labels(trainable):
        out = {k: jax.tree.map(lambda _: "weights", v) for k, v in trainable.items() if k != "scores"}
        scores = trainable["scores"]
        out["scores"] = {k: ("dual" if k == "log_lambda" else jax.tree.map(lambda _: "logits", v))
                         for k, v in scores.items()}
        return out

    return optax.multi_transform({"weights": weights, "logits": optax.adam(mask_lr),
                                  "dual": optax.sgd(-dual_rate)}, labels)
