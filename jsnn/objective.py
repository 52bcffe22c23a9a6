"""What the network is trained and judged on: input preprocessing, the loss and the prediction.

``TrainingRuleDefaults`` is what a training rule (jsnn/training_rules.py) trains by where it says nothing else.
One module, so the trainer, the SF statistics and gradients, the theory experiments, the cost
report and the NIR checks all see the same inputs and follow the same loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jsnn import data as jdata
from jsnn.variables import apply_model


def preprocess(images: jax.Array, mean, std, augment: jdata.AugmentConfig | None = None, key=None) -> jax.Array:
    """uint8 (or float) images -> the network's float input: augmented (training, with ``key``), normalized."""
    x = images.astype(jnp.float32)
    if key is not None and augment is not None and not augment.is_identity:
        x = jdata.augment_batch(key, x, augment)
    return jdata.normalize(x, mean, std)


def spike_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over timesteps of the cross-entropy of each timestep's logits (prediction: argmax of the mean logits)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[None, :]).mean()


def per_example_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``spike_loss`` of each example: [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[None, :]).mean(0)


def predictions(logits: jax.Array) -> jax.Array:
    """argmax of the logits averaged over time."""
    return jnp.argmax(logits.mean(axis=0), axis=-1)


class TrainingRuleDefaults:
    """What a training rule does where it says nothing: its objective is the task loss of ``forward_variables``'
    network, and the step changes nothing after the optimizer's update. The trainer calls both on every
    rule (a rule overrides what differs: the energy search its loss, SET / RigL ``update_masks``)."""

    def loss(self, model, state, images, labels):
        """(loss, (logits, new batch statistics)) of ``state``'s trees, in training mode."""
        variables = self.forward_variables(state.weights, state.masks, state.scores, state.bn, state.batch_stats)
        logits, new_stats, _ = apply_model(model, variables, images, train=True)
        return spike_loss(logits, labels), (logits, new_stats)

    def update_masks(self, state, grads: dict, step, key):
        """The state after the step's update, changed in the step (inside jit); by default unchanged."""
        return state

    def effective_gates(self, scores):
        """The per-neuron gates the ticket's forward pass applies (``Variables.gates``); none by default (only
        Shi et al.'s neuron masks gate spikes, jsnn/sparsity/shi_training.py)."""
        return {}
