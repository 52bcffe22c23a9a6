"""Training rules: a pruning method as the one thing it changes in training (``TrainingRule``):
which pytrees the optimizer updates, and how (weights, masks, scores) become
the variables of the forward pass.

| rule          | trained           | forward kernel                                   |
|---------------|-------------------|--------------------------------------------------|
| MaskedTraining| weights, bn       | weights * masks (dense = all-ones masks)         |
|   + dns layers| weights, bn       | weights * masks, gradient to every weight there  |
| EdgePopup     | scores            | weights * top-k(|scores|) (straight-through)     |
| DynamicSparse | weights, bn       | weights * masks, gradient to every weight; masks |
|   Training    |                   | updated inside the step (SET / RigL)             |
| EnergySearch  | weights, bn,      | weights * gates of weight and channel logits;    |
|               | scores (logits)   | its loss adds the SynOps penalty                 |
| EnergyFinetune| weights, bn       | weights * binary masks (logits' updates zeroed)  |
|               |                   | (both: jsnn/sparsity/energy_training.py)         |
| ShiSearch     | weights, bn,      | weights * sigma(beta m_w); spikes * sigma(beta   |
|               | scores (logits)   | m_n) per neuron; its loss adds Shi's penalty     |
| ShiFinetune   | weights, bn       | binary masks; spikes * (m_n > 0) per neuron      |
|               |                   | (both: jsnn/sparsity/shi_training.py)            |

Each subclasses ``jsnn.objective.TrainingRuleDefaults`` (the task loss, no in-step change) and overrides what
differs. The trainer, data, checkpoint and metrics code never branch on the rule. (A method, registered by
name in jsnn/runs/registry.py, is the whole run; its plan, jsnn/runs/run.py, says which rule it trains by.)
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

import jax

from jsnn.objective import TrainingRuleDefaults
from jsnn.sparsity import dynamic
from jsnn.sparsity.score_masks import masks_from_scores
from jsnn.variables import Variables, by_name, from_names, kernels, map_with_names, with_kernels

PyTree = Any


@dataclasses.dataclass(frozen=True)
class MaskedTraining(TrainingRuleDefaults):
    """Dense training and IMP: weights and BN trained, kernel = weights * mask.

    Pruned weights stay exactly zero: the mask zeroes their gradient in the
    forward pass and ``mask_updates`` zeroes their update (so momentum and
    weight decay cannot revive them). Layers named in ``dns_layers`` follow
    dynamic network surgery (SF-IMP-2): the mask acts in the loss's forward
    pass only, every weight there gets its gradient and update, so a pruned
    weight can come back at the next pruning step.
    """

    dns_layers: tuple[str, ...] = ()
    trainable: tuple[str, ...] = ("weights", "bn")

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        del scores
        if self.dns_layers:
            # kernels only: a layer's bias shares its path and must not stand in for the kernel
            w, m = by_name(kernels(weights)), by_name(masks)
            for name in self.dns_layers:
                kernel, mask = w[name], m[name]
                # forward value kernel * mask, gradient to every entry of kernel
                w[name] = kernel + jax.lax.stop_gradient(kernel * mask - kernel)
                m[name] = jax.numpy.ones_like(mask)
            weights = with_kernels(weights, from_names(w))
            masks = from_names(m)
        return Variables(weights, masks, bn, batch_stats)

    def effective_masks(self, masks, scores) -> PyTree:
        """The masks the loss's forward pass applies (DNS layers included)."""
        return masks

    def mask_updates(self, updates: dict, masks) -> dict:
        kept = map_with_names(lambda name, u, m: u if name in self.dns_layers else u * m.astype(u.dtype),
                              kernels(updates["weights"]), masks)
        return {**updates, "weights": with_kernels(updates["weights"], kept)}


@dataclasses.dataclass(frozen=True)
class EdgePopup(TrainingRuleDefaults):
    """Edge-popup: only the scores are trained; weights (and BN, if affine) stay frozen.

    ``sparsities`` gives each layer's removed fraction as ((path, s), ...),
    hashable so the rule can be a static argument of jit. ``sparsity_type``
    (jsnn/sparsity/patterns.py) is the pattern the top-k keeps, inside the jitted step.
    """

    sparsities: tuple[tuple[str, float], ...]
    trainable: tuple[str, ...] = ("scores",)
    sparsity_type: str = "unstructured"

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        return Variables(weights, self.effective_masks(masks, scores), bn, batch_stats)

    def effective_masks(self, masks, scores) -> PyTree:
        del masks
        return masks_from_scores(scores, from_names(dict(self.sparsities)), self.sparsity_type)

    def mask_updates(self, updates: dict, masks) -> dict:
        return updates


@dataclasses.dataclass(frozen=True)
class DynamicSparseTraining(TrainingRuleDefaults):
    """SET / RigL (jsnn/sparsity/dynamic.py): weights and BN trained under masks that change during training.

    Forward: the kernel times its mask, with the straight-through gradient of DNS layers
    (``kernel + stop_gradient(kernel * mask - kernel)``), so the gradient reaching a pruned entry is
    the dense gradient w.r.t. the effective weight (what RigL grows by); ``mask_updates`` zeroes the
    updates of pruned weights and ``update_masks`` re-masks the kernels after every step, so a pruned
    weight is exactly 0 after every step, whatever the optimizer.

    ``update_masks`` (``TrainingRuleDefaults``' no-change replaced): at the steps ``t`` with
    ``t % update_every == 0`` and ``t <= end_step`` (``lax.cond``, inside the jitted step) it drops and
    grows with the cosine-decayed ``drop_fraction``. An update iteration takes the weight step on the old
    mask first, then updates the mask (rigl-TF's SET order; rigl-TF's RigL and jaxpruner skip the
    weight step there instead). RigL's grow gradient is that iteration's, taken before the weight step.
    """

    algorithm: str = "rigl"
    drop_fraction: float = 0.3
    update_every: int = 100
    end_step: int = 0
    trainable: tuple[str, ...] = ("weights", "bn")

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables:
        del scores
        # forward value kernel * mask (= kernel: pruned entries are stored as 0), gradient to every entry
        through = map_with_names(lambda _, k, m: k + jax.lax.stop_gradient(k * m.astype(k.dtype) - k),
                                 kernels(weights), masks)
        ones = jax.tree.map(jax.numpy.ones_like, masks)
        return Variables(with_kernels(weights, through), ones, bn, batch_stats)

    def effective_masks(self, masks, scores) -> PyTree:
        return masks

    def mask_updates(self, updates: dict, masks) -> dict:
        kept = map_with_names(lambda _, u, m: u * m.astype(u.dtype), kernels(updates["weights"]), masks)
        return {**updates, "weights": with_kernels(updates["weights"], kept)}

    def update_masks(self, state, grads: dict, step, key):
        """The state after a step, its masks updated when ``step`` is an update step, kernels re-masked."""
        kernel_grads = kernels(grads["weights"])

        def update(s):
            alpha = dynamic.drop_fraction_at(step, self.drop_fraction, self.end_step)
            weights, masks, opt_state = dynamic.mask_update(s.weights, s.masks, s.opt_state, kernel_grads, alpha,
                                                            key, self.algorithm)
            return s.replace(weights=weights, masks=masks, opt_state=opt_state)

        state = jax.lax.cond(dynamic.is_update_step(step, self.update_every, self.end_step), update,
                             lambda s: s, state)
        return state.replace(weights=dynamic.remask(state.weights, state.masks))


@typing.runtime_checkable
class TrainingRule(typing.Protocol):
    """What the trainer asks of a training rule; any hashable object with these members is one (no closed union).

    ``trainable`` names the TrainState fields the optimizer updates; ``forward_variables`` turns the
    state's trees into what the model runs on; ``effective_masks`` is the mask the forward pass applies;
    ``mask_updates`` edits the optimizer's updates before they are applied.

    ``loss(model, state, images, labels) -> (loss, (logits, new_batch_stats))`` is the step's objective and
    ``update_masks(state, grads, step, key) -> state`` changes the state after the weight step, inside the
    jitted step; ``effective_gates(scores)`` the per-neuron gates of the ticket (``Variables.gates``);
    ``TrainingRuleDefaults`` gives the three (the task loss; no change), so a rule subclasses it and
    writes what differs (DynamicSparseTraining: SET / RigL's mask update; jsnn/sparsity/energy_training.py:
    the energy-budget search adds its SynOps penalty to the loss).
    """

    trainable: tuple[str, ...]

    def forward_variables(self, weights, masks, scores, bn, batch_stats) -> Variables: ...

    def effective_masks(self, masks, scores) -> PyTree: ...

    def mask_updates(self, updates: dict, masks) -> dict: ...

    def loss(self, model, state, images, labels): ...

    def update_masks(self, state, grads: dict, step, key): ...

    def effective_gates(self, scores) -> PyTree: ...


def masks_in_use(rule: TrainingRule, masks, scores) -> PyTree:
    """``rule.effective_masks(masks, scores)`` called from the host (an epoch's logged sparsity, a ticket, a cost
    count): one compiled program per rule and shapes where the masks come from scores (edge-popup's top-k, the
    energy and Shi searches' gates), which, called eagerly, compiled each layer's operations apart at every run's
    start; the masks themselves where a rule has no scores."""
    if not jax.tree.leaves(scores):
        return rule.effective_masks(masks, scores)
    return _effective_masks(rule, masks, scores)


@functools.partial(jax.jit, static_argnums=0)  # a rule is hashable (TrainingRule)
def _effective_masks(rule: TrainingRule, masks, scores) -> PyTree:
    return rule.effective_masks(masks, scores)
