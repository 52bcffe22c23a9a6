"""The usage-weighted connection penalty of Shi et al.'s weight and neuron mask learning as published, with the
soft masks it prices and the connection count it stands for (ICLR 2024; reference code xyshi2000/Unstructured-Pruning
@ 175134e: ``models/submodules/sparse.py``, ``sparsity/penalty_term.py``, ``sparsity/temp_scheduler.py``,
``main.py``): the math, and where it sits in jsnn's networks. The method ``shi`` (jsnn/runs/shi.py,
jsnn/sparsity/shi_training.py) trains with it.

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

**In jsnn's networks** (``gated_producers``, from the model's description): every conv / linear kernel has weight
logits (Shi et al.'s ConvBlocks all have ``sparse_weights``, the first conv and the classifier included); the LIF
after every conv but the first has neuron logits, one per position (their Cifar10Net and VGGSNN: the first conv
and the fc layers have no neuron masks), where that conv alone feeds it and its spikes reach only conv / linear
layers through pools and flattens. The gate multiplies the LIF's spikes inside the model
(``Variables.gates``, ``jsnn.layers.GATES``), so everything that runs a ticket (evaluation, the cost report, NIR
export) sees the gated network. ``connections`` is the paper's connection count (``model.connects``).

Differences from jsnn's budgeted variant (jsnn.sparsity.gated_synops): see docs/methods.md, "Energy-budget pruning".
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jsnn.layers import GATE
from jsnn.models.description import Layer, readers
from jsnn.variables import Variables, by_name, from_names

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


# -- where the masks sit in a jsnn network (its description, jsnn.models.description) -----------------------


def _producers(layers, layer: Layer) -> tuple[str, ...]:
    """The conv / linear layers whose spikes ``layer`` reads (back through LIFs, pools, flattens and joins)."""
    named = {x.name: x for x in layers}
    out, frontier = [], list(layer.inputs)
    while frontier:
        source = named[frontier.pop()]
        if source.kind in ("conv", "linear"):
            out.append(source.name)
        elif source.kind != "input":
            frontier.extend(source.inputs)
    return tuple(sorted(set(out)))


def gated_producers(layers) -> dict[str, tuple[int, ...]]:
    """{conv layer: shape of one example's output (H, W, C)} of the LIF layers with neuron masks (module doc):
    fed by that conv alone (not the first conv), read only by conv / linear layers through pools and flattens."""
    layers = tuple(layers)
    named, read_by = {x.name: x for x in layers}, readers(layers)
    out = {}
    for lif in layers:
        if lif.kind != "lif" or len(lif.inputs) != 1:
            continue
        producer = named[lif.inputs[0]]
        if producer.kind != "conv" or producer.inputs == ("input",):
            continue
        frontier, ok, read = [lif.name], True, False
        while frontier:
            for r in read_by.get(frontier.pop(), []):
                if r.kind in ("max_pool", "avg_pool", "flatten"):
                    frontier.append(r.name)
                elif r.kind in ("conv", "linear") and len(r.inputs) == 1:
                    read = True
                else:  # a residual join: its other input is not gated
                    ok = False
        if ok and read:
            out[producer.name] = tuple(producer.out_shape)
    return out


def blocks_of(layers) -> list[Block]:
    """Every conv / linear layer of a description as one of Shi et al.'s blocks (a linear as a 1x1 conv on a
    1x1 map, as their fc ConvBlocks), reading the spikes of the layers ``_producers`` finds."""
    layers = tuple(layers)
    out = []
    for x in layers:
        if x.kind == "conv":
            out.append(Block(x.name, tuple(x.in_shape[:2]), (x.kernel_size, x.kernel_size), x.stride,
                             x.out_shape[-1], _producers(layers, x)))
        elif x.kind == "linear":
            out.append(Block(x.name, (1, 1), (1, 1), 1, x.out_shape[-1], _producers(layers, x)))
    return out


def init_logits(like_masks, layers, weights_mean: float = 0.0, neurons_mean: float = 0.0) -> dict:
    """{"weights": a logit per weight (the masks' tree), "neurons": a logit per gated neuron (gates' tree)}, at
    Shi et al.'s ``--mask-init-factor`` means (std 0, their default: all 0)."""
    weights = jax.tree.map(lambda m: jnp.full(m.shape, weights_mean, jnp.float32), like_masks)
    neurons = {p: jnp.full(shape, neurons_mean, jnp.float32) for p, shape in gated_producers(layers).items()}
    return {"weights": weights, "neurons": from_names(neurons, leaf=GATE)}


def soft_variables(weights, masks, logits: dict, bn, batch_stats, beta_w, beta_n) -> Variables:
    """The search's network: kernel masks ``masks * sigma(beta_w m_w)``, gates ``sigma(beta_n m_n)``."""
    named = by_name(masks)
    soft = {k: named[k].astype(jnp.float32) * soft_mask(v, beta_w) for k, v in by_name(logits["weights"]).items()}
    gates = jax.tree.map(lambda m: soft_mask(m, beta_n), logits["neurons"])
    return Variables(weights, from_names(soft), bn, batch_stats, gates)


def binary_variables(weights, masks, logits: dict, bn, batch_stats) -> Variables:
    """The ticket the logits give: kernel masks ``masks * (m_w > 0)``, gates ``m_n > 0``."""
    named = by_name(masks)
    kept = {k: named[k] * binary_mask(v).astype(named[k].dtype) for k, v in by_name(logits["weights"]).items()}
    return Variables(weights, from_names(kept), bn, batch_stats, jax.tree.map(binary_mask, logits["neurons"]))


# -- the paper's connection count ------------------------------------------------------------------------


def _conv_sum(x: np.ndarray, kernel: np.ndarray, layer: Layer) -> np.ndarray:
    pad = layer.padding
    return np.asarray(jax.lax.conv_general_dilated(
        jnp.asarray(x[None], jnp.float32), jnp.asarray(kernel, jnp.float32), (layer.stride, layer.stride),
        [(pad, pad), (pad, pad)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST))[0]


def _pool(x: np.ndarray, layer: Layer, reduce) -> np.ndarray:
    h, w, c = x.shape
    if layer.kind == "avg_pool" and layer.window == 0:
        return x.mean((0, 1), keepdims=True)
    k, s, pad = layer.window, layer.stride, layer.padding
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    ho, wo = layer.out_shape[:2]
    return np.stack([np.stack([reduce(x[i * s:i * s + k, j * s:j * s + k], axis=(0, 1)) for j in range(wo)])
                     for i in range(ho)])


def connections(layers, kept: dict, gates: dict | None = None) -> tuple[float, float]:
    """(connections left, connections of the dense network): ``model.connects()`` of the reference code. A ones
    image goes through the binary kept-weight masks ({layer: mask}) and neuron gates ({producer: gate}); a
    layer's connections are the sum of its outputs' incoming connection counts (conv / matmul of the alive
    input map with the kept mask, times the layer's gate); a neuron is alive when it has one and its gate is
    on. Max pools take the max of the alive map, average pools its mean (as their ``AvgPool2d`` does), a join
    the sum; the dense count runs the same with every weight and neuron kept (zero padding counts nothing)."""
    gates = gates or {}
    alive: dict[str, np.ndarray] = {}
    dense: dict[str, np.ndarray] = {}
    conn = total = 0.0
    for x in layers:
        if x.kind == "input":
            alive[x.name] = dense[x.name] = np.ones(x.out_shape, np.float32)
            continue
        a = sum(alive[i] for i in x.inputs)
        d = sum(dense[i] for i in x.inputs)
        if x.kind in ("conv", "linear"):
            mask = np.asarray(kept[x.name], np.float32)
            if x.kind == "conv":
                s, t = _conv_sum(a, mask, x), _conv_sum(d, np.ones_like(mask), x)
            else:
                s, t = a.reshape(-1) @ mask, d.reshape(-1) @ np.ones_like(mask)
            if x.name in gates:
                s = s * np.asarray(gates[x.name], np.float32)
            conn += float(s.sum())
            total += float(t.sum())
            alive[x.name], dense[x.name] = (s != 0).astype(np.float32), np.ones(s.shape, np.float32)
        elif x.kind == "max_pool":
            alive[x.name], dense[x.name] = _pool(a, x, np.max), _pool(d, x, np.max)
        elif x.kind == "avg_pool":
            alive[x.name], dense[x.name] = _pool(a, x, np.mean), _pool(d, x, np.mean)
        elif x.kind == "flatten":
            alive[x.name], dense[x.name] = a.reshape(-1), d.reshape(-1)
        else:  # lif, add: the map passes on (a join: the sum of its inputs')
            alive[x.name], dense[x.name] = a, d
    return conn, total
