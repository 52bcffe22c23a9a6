"""Spike-for-spike comparison of a jsnn model with a run of its NIR graph elsewhere.

    logits, spikes, potentials = jsnn_layer_spikes(model, variables, images)
    report = agreement(spikes, other_spikes, potentials, threshold)

``jsnn_layer_spikes`` records every LIF layer of a jsnn model exactly as the model
computes it (the model's own ``lif_folded`` call, wrapped while the model runs), keyed
by the LIF node names ``to_nir`` lists in ``metadata["lif_layers"]``, in NIR's layout
[T, B, C, H, W]. ``agreement`` counts the (image, layer, neuron, t) spikes that agree
and, for those that do not, how far jsnn's membrane potential U was from the
threshold at the *first* disagreement of each neuron (later ones follow from the
different state and from upstream spikes).
"""
from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np

from jsnn.layers import unfold_time
from jsnn.variables import apply_model


@contextlib.contextmanager
def _recording_lif(into: list):
    import jsnn.models.common as common

    original = common.lif_folded

    def recording(x, timesteps, config, return_potential=False):
        spikes, potentials = original(x, timesteps, config, return_potential=True)
        into.append((unfold_time(spikes, timesteps), unfold_time(potentials, timesteps)))
        return (spikes, potentials) if return_potential else spikes

    common.lif_folded = recording
    try:
        yield
    finally:
        common.lif_folded = original


def _nir_layout(x):
    return np.moveaxis(np.asarray(x), -1, 2) if x.ndim == 5 else np.asarray(x)


def jsnn_layer_spikes(model, variables, images, layers: list[str], batch_size: int = 128):
    """``(logits [T, N, classes], {layer: spikes}, {layer: potentials U})`` of ``model`` on
    ``images`` (normalised NHWC), spikes and U in NIR's layout [T, N, C, H, W]; ``layers``:
    the LIF layers in the order the model runs them (``metadata["lif_layers"]``)."""
    logits, spikes, potentials = [], {k: [] for k in layers}, {k: [] for k in layers}
    for start in range(0, len(images), batch_size):
        seen = []
        with _recording_lif(seen):
            out, _, _ = apply_model(model, variables, jnp.asarray(images[start:start + batch_size]), train=False)
        if len(seen) != len(layers):
            raise ValueError(f"the model ran {len(seen)} LIF layers, the graph lists {len(layers)}: {layers}")
        logits.append(np.asarray(out))
        for name, (s, u) in zip(layers, seen):
            spikes[name].append(_nir_layout(s))
            potentials[name].append(_nir_layout(u))
    cat = lambda d: {k: np.concatenate(v, axis=1) for k, v in d.items()}  # noqa: E731
    return np.concatenate(logits, axis=1), cat(spikes), cat(potentials)


def agreement(reference: dict, other: dict, potentials: dict | None = None, threshold: float = 1.0) -> dict:
    """Agreement of two runs' spikes {layer: [T, N, ...]} over the layers of ``reference``.

    Returns {"spikes": total, "agree": count, "fraction": agree / total, "per_layer": {...},
    "first_mismatch_distance": sorted |U - threshold| at each neuron's first disagreement
    (when ``potentials``, jsnn's U, are given)}."""
    total = agree = 0
    per_layer, distances = {}, []
    for name, ref in reference.items():
        got = np.asarray(other[name])
        if got.shape != ref.shape:
            raise ValueError(f"layer {name}: shapes {ref.shape} and {got.shape} differ")
        same = ref == got
        per_layer[name] = float(same.mean())
        total += same.size
        agree += int(same.sum())
        if potentials is not None and not same.all():
            differ = ~same
            first = differ & (np.cumsum(differ, axis=0) == 1)  # first disagreement over time
            distances.extend(np.abs(np.asarray(potentials[name])[first] - threshold).tolist())
    return {"spikes": total, "agree": agree, "fraction": agree / total, "per_layer": per_layer,
            "first_mismatch_distance": sorted(distances)}


def predictions(outputs: np.ndarray) -> np.ndarray:
    """The readout: argmax of the outputs averaged over time ([T, N, n] -> [N])."""
    return np.argmax(np.asarray(outputs).mean(axis=0), axis=-1)


__all__ = ["jsnn_layer_spikes", "agreement", "predictions"]
