"""Shi et al.'s weight and neuron mask learning as published (ICLR 2024; reference code
xyshi2000/Unstructured-Pruning @ 175134e: ``models/submodules/sparse.py``, ``sparsity/penalty_term.py``,
``sparsity/temp_scheduler.py``, ``main.py``): the math, not yet a method of the registry.

Every block (a conv, or a linear layer as a 1x1 conv; BN; LIF) owns a real-valued logit per weight ``m_w``
(the kernel's shape) and, where it has neuron masks, a logit per neuron **position** ``m_n`` (C, H, W: one
per neuron, shared over time and batch; jsnn's NHWC layout holds it as (H, W, C)). While searching the
kernel is ``sigma(beta_w m_w) * W`` and the block's spikes leave as ``sigma(beta_n m_n) * LIF(.)`` (the
gate after the neuron); once the masks are fixed both are ``m > 0``. The loss is the task's plus

    P = lambda * sum_blocks [ c_n * sum sigma(beta_n m_n) + c_w * sum sigma(beta_w m_w) ]

with lambda fixed per run (1e-11 on their CIFAR-10 preset) and usage constants from one pass of a ones image
(``calc_c``): ``c_w = H_in * W_in / stride**2`` (the output positions, i.e. uses of each weight per step) and
``c_n`` of a block the sum, over the blocks reading its spikes, of ``C_out * k_h * k_w / stride**2`` (its
fan-out). No firing-rate term: the penalty is a usage-weighted connection count. Each iteration the masks'
optimizer (Adam, ``--prune-weight-decay`` added to the gradient as torch's Adam does) steps first, then
the weights', then the temperature, ``beta = beta0 * exp(log(beta1 / beta0) * (t - T0) / (Tmax - T0))``,
constant outside [T0, Tmax], separately for weights and neurons.

Differences from jsnn's budgeted variant (jsnn.sparsity.energy): see docs/methods.md, "Energy-budget pruning".
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

# Shi et al.'s defaults (main.py): temperature 5 -> 1000, lambda 1e-11, masks initialised at 0, Adam 1e-4
BETA0, BETA1 = 5.0, 1000.0
LAMBDA = 1e-11
MASK_LR = 1e-4


@dataclasses.dataclass(frozen=True)
class Block:
    """One of Shi et al.'s ConvBlocks as the usage constants see it: ``in_hw`` its input's (H, W), ``kernel``
    (k_h, k_w), ``out_channels``, ``inputs`` the names of the blocks whose spikes it reads."""

    name: str
    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: int
    out_channels: int
    inputs: tuple[str, ...] = ()


def usage_constants(blocks) -> tuple[dict, dict]:
    """({block: c_w}, {block: c_n}) of ``calc_c`` (module doc); a block nothing reads has c_n 0."""
    c_w, c_n = {}, {b.name: 0.0 for b in blocks}
    for b in blocks:
        c_w[b.name] = b.in_hw[0] * b.in_hw[1] / (b.stride * b.stride)
        fan_out = b.out_channels * b.kernel[0] * b.kernel[1] / (b.stride * b.stride)
        for source in b.inputs:
            c_n[source] += fan_out
    return c_w, c_n


def temperature(step, beta0: float = BETA0, beta1: float = BETA1, t0: int = 0, tmax: int = 1) -> jax.Array:
    """``SplitTemperatureScheduler._temp_*`` at iteration ``step``: beta0 before t0, beta1 after tmax."""
    step = jnp.asarray(step, jnp.float32)
    inside = beta0 * jnp.exp(math.log(beta1 / beta0) * (step - t0) / (tmax - t0))
    return jnp.where(step < t0, beta0, jnp.where(step > tmax, beta1, inside)).astype(jnp.float32)


def soft_mask(logits: jax.Array, beta) -> jax.Array:
    """The search's gate ``sigma(beta m)``."""
    return jax.nn.sigmoid(beta * logits)


def binary_mask(logits: jax.Array) -> jax.Array:
    """The fixed gate ``m > 0`` (``torch.where(mask_value > 0, 1, 0)``)."""
    return (logits > 0).astype(jnp.float32)


def penalty(weight_logits: dict, neuron_logits: dict, c_w: dict, c_n: dict, lam: float, beta_w, beta_n) -> jax.Array:
    """``PenaltyTerm.forward``: lambda * sum over blocks of c_n sum sigma(beta_n m_n) + c_w sum sigma(beta_w m_w)
    (a block without neuron masks is absent from ``neuron_logits``)."""
    total = jnp.zeros((), jnp.float32)
    for name, m in neuron_logits.items():
        total = total + lam * c_n[name] * jnp.sum(soft_mask(m, beta_n))
    for name, m in weight_logits.items():
        total = total + lam * c_w[name] * jnp.sum(soft_mask(m, beta_w))
    return total


def mask_optimizer(lr: float = MASK_LR, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, weight_decay) on the logits: the decay added to the gradient before the moments."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))


def mask_update(logits: dict, task_grads: dict, opt_state, optimizer: optax.GradientTransformation,
                c_w: dict, c_n: dict, lam: float, beta_w, beta_n) -> tuple[dict, object]:
    """One step of the masks' optimizer: the gradient of task + penalty with respect to the logits
    ({"weights": {block: m_w}, "neurons": {block: m_n}}); ``task_grads`` the task loss's (same structure)."""
    penalty_grads = jax.grad(lambda lg: penalty(lg["weights"], lg["neurons"], c_w, c_n, lam, beta_w, beta_n))(logits)
    grads = jax.tree.map(jnp.add, task_grads, penalty_grads)
    updates, opt_state = optimizer.update(grads, opt_state, logits)
    return optax.apply_updates(logits, updates), opt_state
