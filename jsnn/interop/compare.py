"""Spike-for-spike comparison of a jsnn model with a run of its NIR graph elsewhere.

    logits, spikes, potentials = jsnn_layer_spikes(model, variables, images)
    report = agreement(spikes, other_spikes, potentials, threshold)

``jsnn_layer_spikes`` records every LIF layer of a jsnn model exactly as the model
computes it (``jsnn.models.observe``), keyed by the LIF node names ``to_nir`` lists in
``metadata["lif_layers"]``, in NIR's layout [T, B, C, H, W]. ``agreement`` counts the
(image, layer, neuron, t) spikes that agree and, for those that do not, separates the flips
that start one (a neuron whose inputs and past agree, so only its current's rounding differs:
how far jsnn's U was from the threshold there) from the ones that follow from an earlier flip.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.models.observe import observe


def _nir_layout(x):
    return np.moveaxis(np.asarray(x), -1, 2) if x.ndim == 5 else np.asarray(x)


def layer_spike_recorder(model, layers: list[str]):
    """A jitted ``(variables, images) -> (logits [T, N, classes], {layer: spikes}, {layer: U})``
    for ``model`` (numpy, NIR layout [T, N, C, H, W]); ``layers``: the LIF layers in the order
    the model runs them (``metadata["lif_layers"]``)."""

    @jax.jit
    def run(variables, x):
        out, seen = observe(model, variables, x)
        return out, [(n.spikes, n.potentials) for n in seen.neurons.values()]

    def record(variables, images):
        out, seen = run(variables, jnp.asarray(images))
        if len(seen) != len(layers):
            raise ValueError(f"the model ran {len(seen)} LIF layers, the graph lists {len(layers)}: {layers}")
        spikes = {name: _nir_layout(s) for name, (s, _) in zip(layers, seen)}
        potentials = {name: _nir_layout(u) for name, (_, u) in zip(layers, seen)}
        return np.asarray(out), spikes, potentials

    return record


def jsnn_layer_spikes(model, variables, images, layers: list[str], batch_size: int = 512):
    """``layer_spike_recorder`` over ``images`` (normalised NHWC) in batches, concatenated."""
    record = layer_spike_recorder(model, layers)
    logits, spikes, potentials = [], {k: [] for k in layers}, {k: [] for k in layers}
    for start in range(0, len(images), batch_size):
        out, s, u = record(variables, images[start:start + batch_size])
        logits.append(out)
        for name in layers:
            spikes[name].append(s[name])
            potentials[name].append(u[name])
    cat = lambda d: {k: np.concatenate(v, axis=1) for k, v in d.items()}  # noqa: E731
    return np.concatenate(logits, axis=1), cat(spikes), cat(potentials)


def agreement(reference: dict, other: dict, potentials: dict | None = None, threshold: float = 1.0) -> dict:
    """Agreement of two runs' spikes {layer: [T, N, ...]} over the layers of ``reference``,
    given in the order the network computes them.

    Returns {"spikes": total, "agree": count, "fraction": agree / total, "per_layer": {...}}
    and, when jsnn's membrane potentials ``potentials`` are given, splits the disagreements
    into *origins* and *consequences*. An origin is a neuron's first disagreement at a step t
    of an image for which every earlier layer's spikes still agree at all steps <= t: its
    inputs and its own past are the same in both runs, so only the rounding of its current
    can flip it. Everything else follows from an earlier flip. "origin_distance": sorted
    |U - threshold| of jsnn's U at each origin."""
    total = agree = 0
    per_layer, per_layer_agree, origins, consequences = {}, {}, [], 0
    upstream_first = None  # [N]: the first step at which some earlier layer differs, per image
    for name, ref in reference.items():
        got = np.asarray(other[name])
        if got.shape != ref.shape:
            raise ValueError(f"layer {name}: shapes {ref.shape} and {got.shape} differ")
        differ = ref != got
        per_layer[name] = float(1.0 - differ.mean())
        per_layer_agree[name] = int(differ.size - differ.sum())
        total += differ.size
        agree += int(differ.size - differ.sum())
        T, N = differ.shape[:2]
        if upstream_first is None:
            upstream_first = np.full(N, T)
        if potentials is not None and differ.any():
            first = differ & (np.cumsum(differ, axis=0) == 1)
            t = np.arange(T).reshape((T, 1) + (1,) * (differ.ndim - 2))
            clean = t < upstream_first.reshape((1, N) + (1,) * (differ.ndim - 2))
            origin = first & clean
            origins.extend(np.abs(np.asarray(potentials[name])[origin] - threshold).tolist())
            consequences += int(differ.sum() - origin.sum())
        layer_first = np.where(differ.reshape(T, N, -1).any(axis=2).any(axis=0),
                               np.argmax(differ.reshape(T, N, -1).any(axis=2), axis=0), T)
        upstream_first = np.minimum(upstream_first, layer_first)
    return {"spikes": total, "agree": agree, "fraction": agree / total, "per_layer": per_layer,
            "per_layer_agree": per_layer_agree, "origin_distance": sorted(origins), "consequences": consequences}


__all__ = ["jsnn_layer_spikes", "agreement"]
