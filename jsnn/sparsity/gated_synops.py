"""The SynOps of a network gated per weight and per channel, and a ticket cut to a SynOps budget: what jsnn's
SynOps-budget variant of Shi et al.'s weight and neuron mask learning computes (ICLR 2024; the method ``energy``:
jsnn/runs/energy.py, jsnn/sparsity/energy_training.py): neurons, gates, the differentiable SynOps count, the
temperature, and making a ticket meet its budget. Not Shi et al.'s method:
a budget with λ by dual ascent (theirs: λ fixed), one product penalty priced by measured spikes (theirs:
separate neuron and weight terms with usage constants), gates per channel (theirs: per (C, H, W) position),
SGD on the weights (theirs: Adam), a layer-aware budget cut after the search, measured on training images
(docs/methods.md, "Energy-budget pruning", lists them).

**Neurons are channels.** jsnn gates the output channels of a conv / linear layer, one gate per
channel after its LIF (Shi et al. gate every neuron position (C, H, W)). A non-negative
per-channel gate ``g_c`` on the spikes commutes with max / average pooling and with the flatten,
and ``conv(g * s, W) = conv(s, W * g[in-channel])``, so the gate is folded into the input-channel
slice of the next kernel and lives entirely in the method's masks: the model is unchanged, the
LIF still integrates (as in Shi et al., the gate acts after the neuron), and a channel gated to
0 is a removable piece of hardware (``jsnn.interop.channels`` drops it from the NIR graph), where
a pruned position inside a feature map is not.

**Which channels** (``neuron_groups``, from the model's description ``model.layers``): the output
channels of every conv / linear layer feeding a LIF of its own (one input), whose spikes reach
only conv / linear layers (through max / average pools and flattens). A LIF that sums a residual
join (Res-SNN's block outputs) or feeds one (a block input carried by an identity shortcut) is
not gated: its channel cannot be removed without removing the residual path. On Res-SNN-19 that
leaves the stem (feeding block 0's conv1 and shortcut), every block's conv1, and fc1. The
classifier's outputs feed no LIF and are never pruned. After a flatten of (H, W, C) (NHWC, as jsnn
computes) channel c is the linear inputs ``(h * W + w) * C + c``, so the gate is tiled H*W times.

**SynOps, differentiably** (``synops_per_image``): jsnn's exact count (``jsnn.efficiency``) is,
per conv / linear layer whose input is binary (spikes), the conv of the binarised input with the
binary kept-weight mask summed over outputs, timesteps, positions and images. The same sum with
the mask replaced by a real-valued one, ``sigma(beta m_w) * g_in[c_in] * g_out[c_out]`` (the
layer's own output gate too: a pruned neuron's fan-in is removed from the ticket), is linear in the
mask, hence differentiable in the logits; with 0/1 gates it is the exact count (tested against
``jsnn.efficiency.measure``). The input spikes are the measured ones (no gradient flows through
them: as in Shi et al. the penalty prices connections, at their measured use).

**Meeting the budget** (``enforce_budget``): the ticket's SynOps are measured with ``jsnn.efficiency``
(the cost report's pass, on the training images); while above the budget, each counted layer gives up its
share of the excess (in proportion to its own SynOps), smallest ``cut_rank`` first, as many weights as the
per-weight input-spike counts (``weight_usage``) say cover it, then measured again (removing connections
changes downstream firing). A ``spine``, one path through every counted layer, is never cut (and restored
when the binarised logits emptied a layer), so the ticket stays connected; when only the spine is left and
the count is still over the budget, the result says the budget was not met.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jsnn import batch_split
from jsnn.layers import ConvBN, MaskedDense
from jsnn.models.description import Layer, readers
from jsnn.variables import Variables, apply_model, by_name, from_names, kernels

PyTree = Any

# Shi et al.'s reference code: beta annealed exponentially from 5 to 1000 over the search iterations
BETA0, BETA1 = 5.0, 1000.0


# -- neurons ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Consumer:
    """A conv / linear layer reading a group's spikes; ``repeat``: how often each channel appears in its
    input (H * W after a flatten of (H, W, C), else 1)."""

    path: str
    kind: str  # conv | linear
    repeat: int = 1


@dataclasses.dataclass(frozen=True)
class NeuronGroup:
    """The gateable output channels of one conv / linear layer (``producer``) and where their spikes go."""

    producer: str
    kind: str  # conv | linear
    channels: int
    consumers: tuple[Consumer, ...]


def neuron_groups(layers) -> tuple[NeuronGroup, ...]:
    """The gateable channel groups of a model's description (module doc), in description order."""
    layers = tuple(layers)
    named, read_by = {layer.name: layer for layer in layers}, readers(layers)
    groups = []
    for lif in layers:
        if lif.kind != "lif" or len(lif.inputs) != 1 or named[lif.inputs[0]].kind not in ("conv", "linear"):
            continue
        producer = named[lif.inputs[0]]
        channels = producer.out_shape[-1]
        consumers, gateable, frontier = [], True, [(lif.name, 1)]
        while frontier:
            name, repeat = frontier.pop()
            for r in read_by.get(name, []):
                if r.kind in ("max_pool", "avg_pool"):
                    frontier.append((r.name, repeat))
                elif r.kind == "flatten" and r.in_shape[-1] == channels:
                    frontier.append((r.name, repeat * math.prod(r.in_shape[:-1])))
                elif r.kind in ("conv", "linear") and len(r.inputs) == 1:
                    consumers.append(Consumer(r.name, r.kind, repeat))
                else:  # a residual join, or something a channel gate does not commute with
                    gateable = False
        if gateable and consumers:
            groups.append(NeuronGroup(producer.name, producer.kind, channels,
                                      tuple(sorted(consumers, key=lambda c: c.path))))
    return tuple(groups)


def in_gate(consumer: Consumer, gate: jax.Array) -> jax.Array:
    """``gate`` [C] as a multiplier of the consumer's kernel (its input-channel axis)."""
    if consumer.kind == "conv":
        return gate[None, None, :, None]
    return jnp.tile(gate, consumer.repeat)[:, None]  # flatten (NHWC): input (h * W + w) * C + c is channel c


def out_gate(group: NeuronGroup, gate: jax.Array) -> jax.Array:
    """``gate`` [C] as a multiplier of the producer's kernel (its output-channel axis)."""
    return gate[None, None, None, :] if group.kind == "conv" else gate[None, :]


def gated_masks(weight_masks: dict, gates: dict, groups, fan_in: bool) -> dict:
    """{layer: mask} with each group's gate on its consumers' input channels (the forward pass) and,
    when ``fan_in``, on the producer's output channels too (the count, and the ticket)."""
    out = dict(weight_masks)
    for group in groups:
        gate = gates[group.producer]
        for consumer in group.consumers:
            out[consumer.path] = out[consumer.path] * in_gate(consumer, gate).astype(out[consumer.path].dtype)
        if fan_in:
            out[group.producer] = out[group.producer] * out_gate(group, gate).astype(out[group.producer].dtype)
    return out


def _channel_axes(kind: str, fan: str) -> tuple[int, ...]:
    """Axes reduced to get one value per channel: a conv's out (fan-in slice) / in (fan-out slice) channel."""
    if kind == "conv":
        return (0, 1, 2) if fan == "in" else (0, 1, 3)
    return (0,) if fan == "in" else (1,)


def fan_in_alive(mask, group: NeuronGroup) -> np.ndarray:
    """[C] bool: the channel has a kept fan-in weight (the producer's output slice)."""
    return np.any(np.asarray(mask) != 0, axis=_channel_axes(group.kind, "in"))


def fan_out_alive(named_masks: dict, group: NeuronGroup) -> np.ndarray:
    """[C] bool: some consumer keeps a weight reading the channel."""
    alive = np.zeros(group.channels, bool)
    for c in group.consumers:
        per_input = np.any(np.asarray(named_masks[c.path]) != 0, axis=_channel_axes(c.kind, "out"))
        alive |= per_input.reshape(-1, group.channels).any(0) if c.kind == "linear" else per_input
    return alive


def drop_dead_fan_in(named_masks: dict, groups) -> dict:
    """Masks with the fan-in of every channel whose fan-out is all pruned pruned too (its spikes reach
    nothing, so this changes no output), repeated until nothing changes (a cut can kill an earlier channel)."""
    out = {k: np.asarray(v).copy() for k, v in named_masks.items()}
    changed = True
    while changed:
        changed = False
        for group in groups:
            dead = ~fan_out_alive(out, group) & fan_in_alive(out[group.producer], group)
            if dead.any():
                keep = (~dead).astype(out[group.producer].dtype)
                out[group.producer] = out[group.producer] * np.asarray(out_gate(group, jnp.asarray(keep)))
                changed = True
    return out


def removed_channels(masks: PyTree, model, image_shape) -> dict[str, list[int]]:
    """{producer layer: [channels]} whose fan-in and fan-out weights are all masked: neurons the ticket
    removed (they contribute nothing; ``jsnn.interop.channels`` drops them from a NIR graph). Only the
    gateable groups (``neuron_groups``) are considered; layers without removed channels are left out."""
    named = by_name(masks)
    out = {}
    for group in neuron_groups(model.layers(tuple(image_shape))):
        removed = ~fan_in_alive(named[group.producer], group) & ~fan_out_alive(named, group)
        if removed.any():
            out[group.producer] = [int(c) for c in np.flatnonzero(removed)]
    return out


def removed_channel_counts(masks: PyTree, model, image_shape) -> dict[str, dict[str, int]]:
    """{producer layer: {"removed": n, "channels": C}} for every gateable layer (the cost report's table)."""
    removed = removed_channels(masks, model, image_shape)
    return {g.producer: {"removed": len(removed.get(g.producer, [])), "channels": g.channels}
            for g in neuron_groups(model.layers(tuple(image_shape)))}


# -- the count ---------------------------------------------------------------------------------------------


def forward_with_inputs(model: nn.Module, variables: Variables, images: jax.Array, train: bool):
    """``apply_model`` that also returns every conv / linear layer's input as it ran:
    (logits, new batch statistics, {layer path: input})."""
    seen = {}

    def watch(next_fun, args, kwargs, context):
        if isinstance(context.module, (ConvBN, MaskedDense)) and context.method_name == "__call__":
            seen["/".join(context.module.scope.path)] = args[0]
        return next_fun(*args, **kwargs)

    # the layers' inputs leave the model here: it runs unsplit (jsnn.batch_split)
    with nn.intercept_methods(watch), batch_split.unsplit():
        logits, new_stats, _ = apply_model(model, variables, images, train=train)
    return logits, new_stats, seen


def connection_count(inputs: jax.Array, mask: jax.Array, layer: Layer) -> jax.Array:
    """Sum over every output, row and position of ``(inputs != 0) (*) mask``: the layer's synaptic
    operations when ``mask`` is its binary kept-weight mask, linear in ``mask``."""
    active = (inputs != 0).astype(jnp.float32)
    if layer.kind == "conv":
        # summing the outputs first: one output channel carrying every output channel's weights
        fan_out = jnp.sum(mask.astype(jnp.float32), axis=-1, keepdims=True)
        pad = layer.padding
        counts = jax.lax.conv_general_dilated(active, fan_out, (layer.stride, layer.stride), [(pad, pad), (pad, pad)],
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                              precision=jax.lax.Precision.HIGHEST)
        return jnp.sum(counts)
    per_input = jnp.sum(active.reshape(-1, active.shape[-1]), axis=0)
    return jnp.dot(per_input, jnp.sum(mask.astype(jnp.float32), axis=-1), precision=jax.lax.Precision.HIGHEST)


def is_spike_input(inputs: jax.Array) -> jax.Array:
    """``jsnn.efficiency``'s rule: an input whose values all lie in {-1, 0, 1} counts as ACs (SynOps)."""
    return jnp.all((inputs == 0) | (inputs == 1) | (inputs == -1))


def synops(inputs: dict, count_masks: dict, layers) -> jax.Array:
    """Synaptic operations (ACs) of the layers whose inputs are spikes, summed over the batch, with
    ``count_masks`` ({layer: mask}, real-valued while searching) in place of the kept-weight masks
    (float32: exact integers up to 2**24 with binary masks)."""
    described = {layer.name: layer for layer in layers}
    total = jnp.zeros((), jnp.float32)
    for path, x in sorted(inputs.items()):
        count = connection_count(x, count_masks[path], described[path])
        total = total + jnp.where(is_spike_input(x), count, 0.0)
    return total


def synops_per_image(inputs: dict, count_masks: dict, layers, images: int) -> jax.Array:
    """``synops`` / ``images``."""
    return synops(inputs, count_masks, layers) / images


# -- the schedule ------------------------------------------------------------------------------------------


def temperature(step, steps: int, beta0: float = BETA0, beta1: float = BETA1) -> jax.Array:
    """Shi et al.'s beta at ``step``: ``beta0 * (beta1 / beta0) ** (min(step, steps) / steps)``."""
    t = jnp.minimum(jnp.asarray(step, jnp.float32), jnp.float32(steps)) / jnp.float32(max(steps, 1))
    return jnp.float32(beta0) * jnp.exp(jnp.float32(math.log(beta1 / beta0)) * t)


# -- the learned logits ------------------------------------------------------------------------------------


def init_logits(like_masks: PyTree, groups, value: float) -> dict:
    """{"weights": one logit per weight, "neurons": one per gated channel} (the search's ``scores`` add the
    penalty's log-multiplier, ``energy_training.search_scores``). ``value`` > 0 starts every weight and neuron
    kept."""
    weights = jax.tree.map(lambda m: jnp.full(m.shape, value, jnp.float32), like_masks)
    neurons = from_names({g.producer: jnp.full((g.channels,), value, jnp.float32) for g in groups}, leaf="gate")
    return {"weights": weights, "neurons": neurons}


def soft_gates(logits: dict, beta) -> tuple[dict, dict]:
    """({layer: sigma(beta m_w)}, {producer: sigma(beta m_n)})."""
    return ({k: jax.nn.sigmoid(beta * v) for k, v in by_name(logits["weights"]).items()},
            {k: jax.nn.sigmoid(beta * v) for k, v in by_name(logits["neurons"]).items()})


def binary_gates(logits: dict) -> tuple[dict, dict]:
    """The gates as the ticket takes them: m > 0 (Shi et al.'s binarisation), float {0, 1}."""
    return ({k: (v > 0).astype(jnp.float32) for k, v in by_name(logits["weights"]).items()},
            {k: (v > 0).astype(jnp.float32) for k, v in by_name(logits["neurons"]).items()})


def ticket_masks(logits: dict, masks: PyTree, groups) -> PyTree:
    """The binary ticket of the logits: weight gate times the neuron gates of its input and output
    channel (a pruned neuron's fan-in and fan-out masked), dead fan-in dropped, times ``masks``."""
    weight_gates, neuron_gates = binary_gates(logits)
    named = by_name(masks)
    combined = gated_masks({k: named[k] * weight_gates[k] for k in named}, neuron_gates, groups, fan_in=True)
    cleaned = drop_dead_fan_in({k: np.asarray(v) for k, v in combined.items()}, groups)
    return from_names({k: jnp.asarray(v, named[k].dtype) for k, v in cleaned.items()})


# -- meeting the budget ------------------------------------------------------------------------------------


def cut_rank(weights: PyTree) -> dict:
    """{layer: |w|}: the order in which the cut removes a layer's kept weights, smallest magnitude first. Not
    the logits: by the end of the search beta is 1000 and every kept gate is 1, so a kept logit's value
    records its path through the search rather than its weight's importance (on digits at 97.4 % of IMP's
    SynOps the two orders are compared in benchmarks/results/energy_budget_fix.json); ``weight_rank`` is the
    logits' order (``EnergyOptions.cut_rank``)."""
    from_kernels = by_name(kernels(weights))
    return {k: np.abs(np.asarray(v, np.float32)) for k, v in from_kernels.items()}


def weight_rank(logits: dict, groups) -> dict:
    """{layer: per-weight logit the cut removes lowest-first under ``cut_rank='logits'``}: the smallest of the
    weight's own logit and the logits of the neurons it reads and feeds."""
    weights = {k: np.asarray(v) for k, v in by_name(logits["weights"]).items()}
    neurons = {k: np.asarray(v) for k, v in by_name(logits["neurons"]).items()}
    out = dict(weights)
    for group in groups:
        gate = jnp.asarray(neurons[group.producer])
        for c in group.consumers:
            out[c.path] = np.minimum(out[c.path], np.asarray(in_gate(c, gate)))
        out[group.producer] = np.minimum(out[group.producer], np.asarray(out_gate(group, gate)))
    return out


def spine(rank: dict, groups) -> dict:
    """{layer: bool mask of one weight}: a path through every counted layer that no cut removes, so the ticket
    stays connected. Each gated group keeps one channel (the one whose best fan-in weight ranks highest); each
    layer keeps its highest-ranked weight among those reading its input group's kept channel and writing its
    own group's kept channel (ties: the lowest flat index). The kept channel of every group is then written
    by its producer's spine weight and read by every consumer's, so ``drop_dead_fan_in`` never removes it.
    Depends on the ranks and the shapes only: the switch and the final cut find the same path."""
    ranks = {k: np.asarray(v, np.float64) for k, v in rank.items()}
    channel, reads = {}, {}
    for group in groups:
        best = np.max(ranks[group.producer], axis=_channel_axes(group.kind, "in"))
        channel[group.producer] = int(np.argmax(best))
        for c in group.consumers:
            reads[c.path] = (group, c)
    out = {}
    for path, r in ranks.items():
        allowed = np.ones(r.shape, bool)
        if path in reads:
            group, c = reads[path]
            picked = np.zeros(group.channels, bool)
            picked[channel[group.producer]] = True
            allowed &= np.asarray(in_gate(c, jnp.asarray(picked))).astype(bool)
        producer = next((g for g in groups if g.producer == path), None)
        if producer is not None:
            picked = np.zeros(producer.channels, bool)
            picked[channel[path]] = True
            allowed &= np.asarray(out_gate(producer, jnp.asarray(picked))).astype(bool)
        flat = np.where(allowed.reshape(-1), r.reshape(-1), -np.inf)
        keep = np.zeros(r.size, bool)
        keep[int(np.argmax(flat))] = True
        out[path] = keep.reshape(r.shape)
    return out


def with_spine(named_masks: dict, protected: dict) -> dict:
    """Masks with the spine's weights kept (restored where the binarised logits had pruned them)."""
    return {k: np.where(protected[k], np.ones_like(np.asarray(v)), np.asarray(v)) if k in protected else np.asarray(v)
            for k, v in named_masks.items()}


def cut(named_masks: dict, rank: dict, usage: dict, amount: float, protected: dict | None = None) -> dict:
    """Masks with about ``amount`` of usage removed, layer by layer: each counted layer gives up its share of
    ``amount`` in proportion to its own usage (the search's balance between layers is kept, no layer is
    emptied first), taking its lowest-``rank`` kept weights of nonzero usage until its share is covered (at
    least one weight of a layer with a share; ties in rank by the larger usage first, then by position).
    ``protected`` weights (the ``spine``) are never removed."""
    paths = sorted(usage)
    live, used = {}, {}
    for p in paths:
        keep = (np.asarray(named_masks[p]) != 0) & (np.asarray(usage[p]) > 0)
        if protected is not None and p in protected:
            keep &= ~np.asarray(protected[p], bool)
        live[p] = np.flatnonzero(keep)
        used[p] = float(np.sum(np.asarray(usage[p], np.float64) * (np.asarray(named_masks[p]) != 0)))
    total = sum(used.values())
    out = {k: np.asarray(v).copy() for k, v in named_masks.items()}
    if total <= 0:
        return out
    for p in paths:
        flat = live[p]
        if flat.size == 0:
            continue
        share = amount * used[p] / total
        ranks = np.asarray(rank[p]).reshape(-1)[flat]
        uses = np.asarray(usage[p], np.float64).reshape(-1)[flat]
        order = np.lexsort((flat, -uses, ranks))
        n = int(min(flat.size, np.searchsorted(np.cumsum(uses[order]), share) + 1))
        m = out[p].reshape(-1)
        m[flat[order[:n]]] = 0
        out[p] = m.reshape(out[p].shape)
    return out


@dataclasses.dataclass(frozen=True)
class BudgetResult:
    masks: dict  # {layer: binary mask}: within the budget when ``met``, else the smallest connected ticket found
    measured: tuple[float, ...]  # SynOps per image after each cut, the first before any
    removed_weights: int  # weights the repair removed
    restored_weights: int  # spine weights put back (the binarised logits had pruned them)
    met: bool  # the last measurement is within the budget


# a cut covers half the excess while the excess is large (removing a weight also silences what it fed, so
# the measured drop exceeds the usage removed and a full-size cut would overshoot far below the budget),
# then the whole excess and a little more
HALVING_ABOVE = 0.25  # of the budget


def enforce_budget(named_masks: dict, budget: float, rank: dict, groups,
                   measure: Callable[[dict], float], usage: Callable[[dict], dict],
                   max_cuts: int = 1000) -> BudgetResult:
    """Layer-by-layer cheapest-first removal (``cut``) until ``measure(masks) <= budget``, never through the
    ``spine`` (restored first if missing), so every counted layer keeps a path. ``measure``: SynOps per image
    of the masks (jsnn.efficiency); ``usage``: {counted layer: per-weight input spikes per image}. When only
    the spine (or weights that read no spike) is left and the count is still over the budget, no connected
    ticket within it exists on this path: ``met`` is False and the masks are that smallest ticket."""
    protected = spine(rank, groups)
    masks = with_spine({k: np.asarray(v) for k, v in named_masks.items()}, protected)
    given = sum(int(np.count_nonzero(np.asarray(m))) for m in named_masks.values())
    before = sum(int(np.count_nonzero(m)) for m in masks.values())
    measured = [float(measure(masks))]
    while measured[-1] > budget:
        if len(measured) > max_cuts:
            raise ValueError(f"the ticket still needs {measured[-1]:.0f} SynOps per image after {max_cuts} cuts; "
                             f"the budget is {budget:.0f}")
        excess = measured[-1] - budget
        amount = 0.5 * excess if excess > HALVING_ABOVE * budget else excess + 0.01 * budget
        new = drop_dead_fan_in(cut(masks, rank, usage(masks), amount, protected), groups)
        if all(np.array_equal(new[k], masks[k]) for k in masks):
            break  # nothing removable is left: no connected ticket within the budget
        masks = new
        measured.append(float(measure(masks)))
    after = sum(int(np.count_nonzero(m)) for m in masks.values())
    return BudgetResult(masks, tuple(measured), before - after, before - given, measured[-1] <= budget)


def weight_usage_fn(model: nn.Module, layers) -> Callable:
    """jitted ``(variables, images) -> {layer: per-weight input spikes}`` summed over the batch (eval mode):
    the gradient of the count with respect to each mask (the count is linear in it)."""
    layers = tuple(layers)

    def usage(variables, images):
        _, _, inputs = forward_with_inputs(model, variables, images, train=False)
        named = by_name(variables.masks)
        masks = {p: jnp.ones_like(named[p], jnp.float32) for p in inputs}
        return jax.grad(lambda m: synops(inputs, m, layers))(masks)

    return jax.jit(usage)
