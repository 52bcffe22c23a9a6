"""Removing a ticket's removed channels from its NIR graph (``jsnn.interop.nir_export.to_nir``'s output).

A channel is removed when its fan-in and fan-out weights are all masked
(``jsnn.sparsity.gated_synops.removed_channels``: energy-budget pruning removes whole neurons this way).
Its spikes reach no kept weight, so deleting it changes no output: ``drop_channels`` deletes, for
each such channel of a conv / linear node,

- the node's output channel (Conv2d ``weight[o]`` (OIHW) and ``bias[o]``; Affine ``weight[o]`` and
  ``bias[o]``),
- the channel of every per-neuron node its spikes pass through (the LIF's ``tau, r, v_leak,
  v_threshold, v_reset`` along their channel axis, the max pool's OR neuron; a SumPool2d has no
  per-channel parameters; a Flatten's input type),
- and the input channel of every node reading them (Conv2d ``weight[:, c]``; Affine columns: after a
  Flatten of (C, H, W), NIR's channel-first order, the H * W columns ``c * H * W ...``; else column c).

The graph then describes a smaller network that computes the same outputs up to the float summation
order (the deleted terms were exact zeros): tests/test_energy_channels.py runs both in snnTorch.
"""
from __future__ import annotations

import numpy as np

from jsnn.interop.nir_import import graph_metadata
from jsnn.interop.torch_sims import run_torch, snntorch_module  # torch is imported when one is run
from jsnn.objective import predictions, preprocess
from jsnn.sparsity.gated_synops import removed_channels

_PER_NEURON = ("tau", "r", "v_leak", "v_threshold", "v_reset")


def node_name(layer: str) -> str:
    """A layer path's NIR node name (``nir_export``: "/" becomes "_")."""
    return layer.replace("/", "_")


def _drop_outputs(node, channels):
    import nir

    keep = np.setdiff1d(np.arange(np.asarray(node.weight).shape[0]), channels)
    bias = None if node.bias is None else np.asarray(node.bias)[keep]
    if isinstance(node, nir.Conv2d):
        return nir.Conv2d(input_shape=node.input_shape, weight=np.asarray(node.weight)[keep], stride=node.stride,
                          padding=node.padding, dilation=node.dilation, groups=node.groups, bias=bias)
    return nir.Affine(weight=np.asarray(node.weight)[keep], bias=bias)


def _drop_inputs(node, channels, spatial: int):
    """``node`` without the input channels ``channels`` (Affine after a flatten: each one's ``spatial`` columns)."""
    import nir

    weight = np.asarray(node.weight)
    if isinstance(node, nir.Conv2d):
        keep = np.setdiff1d(np.arange(weight.shape[1]), channels)
        return nir.Conv2d(input_shape=node.input_shape, weight=weight[:, keep], stride=node.stride,
                          padding=node.padding, dilation=node.dilation, groups=node.groups, bias=node.bias)
    gone = (np.asarray(channels)[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)
    keep = np.setdiff1d(np.arange(weight.shape[1]), gone)
    return nir.Affine(weight=weight[:, keep], bias=node.bias)


def _drop_neurons(node, channels):
    import nir

    if isinstance(node, nir.LIF):
        arrays = {k: np.delete(np.asarray(getattr(node, k)), channels, axis=0) for k in _PER_NEURON}
        return nir.LIF(**arrays)
    if isinstance(node, nir.Flatten):
        shape = np.array(node.input_type["input"])
        shape[0] -= len(channels)
        return nir.Flatten(input_type={"input": shape}, start_dim=node.start_dim, end_dim=node.end_dim)
    if isinstance(node, nir.SumPool2d):  # no parameters; a new node, so the graph infers its smaller type
        return nir.SumPool2d(kernel_size=node.kernel_size, stride=node.stride, padding=node.padding)
    if isinstance(node, nir.Scale):  # a per-neuron gate (Shi et al.'s neuron masks): its (C, H, W) less the channels
        return nir.Scale(scale=np.delete(np.asarray(node.scale), channels, axis=0))
    raise ValueError(f"cannot remove channels through a {type(node).__name__} node")


def drop_channels(graph, removed: dict[str, list[int]]):
    """A new ``nir.NIRGraph`` without the channels ``removed`` ({conv / linear layer path: [channels]}),
    their spikes' path and their readers' inputs (module doc); metadata gains ``removed_channels``."""
    import nir

    nodes = dict(graph.nodes)
    readers: dict[str, list[str]] = {}
    for source, target in graph.edges:
        readers.setdefault(source, []).append(target)
    for layer, channels in sorted(removed.items()):
        if not channels:
            continue
        channels = np.asarray(sorted(channels), np.int64)
        producer = node_name(layer)
        if producer not in nodes or not isinstance(nodes[producer], (nir.Conv2d, nir.Affine)):
            raise ValueError(f"the graph has no conv / affine node {producer} to remove channels from")
        nodes[producer] = _drop_outputs(nodes[producer], channels)
        frontier, spatial = list(readers.get(producer, [])), {}
        while frontier:
            name = frontier.pop()
            node = nodes[name]
            if isinstance(node, (nir.Conv2d, nir.Affine)):
                nodes[name] = _drop_inputs(node, channels, spatial.get(name, 1))
                continue
            if isinstance(node, nir.Flatten):
                per_channel = int(np.prod(np.array(node.input_type["input"])[1:]))
            nodes[name] = _drop_neurons(node, channels)
            for r in readers.get(name, []):
                spatial[r] = per_channel if isinstance(node, nir.Flatten) else spatial.get(name, 1)
                frontier.append(r)
    metadata = {**graph.metadata, "removed_channels": ";".join(
        f"{node_name(k)}:{','.join(map(str, sorted(v)))}" for k, v in sorted(removed.items()) if v)}
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=metadata)


def drop_removed_channels(graph, model, masks, image_shape):
    """(the graph without the ticket's removed channels, {layer: [channels]}) (``drop_channels`` of
    ``jsnn.sparsity.gated_synops.removed_channels``). Only channels the model's description lets a gate remove
    are considered (``neuron_groups``): a channel feeding a residual join is never dropped."""
    removed = removed_channels(masks, model, image_shape)
    return drop_channels(graph, removed), removed


def compare_in_snntorch(full, shrunk, dataset, max_images: int | None = None, batch_size: int = 120) -> dict:
    """Both graphs run in snnTorch on the first ``max_images`` (default all) test images: the fraction of
    predictions that agree and the largest output difference (float summation order only, when the dropped
    channels were removed ones)."""
    timesteps = int(graph_metadata(full)["timesteps"])
    nets = snntorch_module(full), snntorch_module(shrunk)
    n = len(dataset.test_images) if max_images is None else min(max_images, len(dataset.test_images))
    same, largest = 0, 0.0
    for start in range(0, n, batch_size):
        x = np.asarray(preprocess(dataset.test_images[start:min(n, start + batch_size)], dataset.mean, dataset.std))
        a, b = (np.asarray(run_torch(net, np.moveaxis(x, -1, -3), timesteps, len(x))[0]) for net in nets)
        same += int(np.sum(np.asarray(predictions(a)) == np.asarray(predictions(b))))
        largest = max(largest, float(np.max(np.abs(a - b))))
    return {"images": n, "prediction_agreement": same / n, "max_output_difference": largest}


__all__ = ["compare_in_snntorch", "drop_channels", "drop_removed_channels", "node_name"]
