"""Run an exported NIR graph in jsnn (``from_nir``), snnTorch and Norse on a test set and
measure how far each agrees with the jsnn ticket it came from.

    report = check_export(model, variables, graph, dataset, ["jsnn", "snntorch", "norse"])

Per simulator: the fraction of (image, layer, neuron, t) spikes of the ticket's LIF
layers that agree, the fraction of predictions that agree, the simulator's test accuracy,
the largest output difference, and the flips that start a disagreement (inputs and past
equal; ``compare.agreement``) with jsnn's |U - threshold| there, apart from those that follow.
"""
from __future__ import annotations

import jax
import numpy as np

from jsnn.interop.compare import agreement, jsnn_layer_spikes, predictions


def _summary(ref_logits, ref_spikes, potentials, threshold, outputs, spikes, labels) -> dict:
    a = agreement(ref_spikes, spikes, potentials, threshold)
    ref_pred, pred = predictions(ref_logits), predictions(outputs)
    d = np.asarray(a["origin_distance"])
    return {
        "spikes": a["spikes"],
        "spikes_agree": a["agree"],
        "spike_agreement": a["fraction"],
        "per_layer": a["per_layer"],
        "images": int(len(labels)),
        "prediction_agreement": float(np.mean(ref_pred == pred)),
        "accuracy": float(np.mean(pred == labels)),
        "max_output_difference": float(np.max(np.abs(np.asarray(outputs) - ref_logits))),
        "origin_flips": int(d.size),  # flips whose inputs and past agree (agreement())
        "origin_max_distance_to_threshold": float(d.max()) if d.size else None,
        "origin_distances": d.tolist()[:100],
        "consequent_flips": a["consequences"],
    }


def check_export(model, variables, graph, dataset, simulators, batch_size: int = 512) -> dict:
    from jsnn import data as jdata
    from jsnn.interop.nir_import import _metadata, from_nir

    meta = _metadata(graph)
    layers = [n for n in str(meta["lif_layers"]).split(",") if n]
    T = int(meta["timesteps"])
    images = np.asarray(jdata.normalize(dataset.test_images, dataset.mean, dataset.std))
    labels = np.asarray(dataset.test_labels)
    ref_logits, ref_spikes, potentials = jsnn_layer_spikes(model, variables, images, layers, batch_size)
    threshold = float(model.lif.threshold)
    report = {"jsnn_accuracy": float(np.mean(predictions(ref_logits) == labels)), "timesteps": T,
              "lif_layers": layers, "simulators": {}}
    for sim in simulators:
        if sim == "jsnn":
            net, nv = from_nir(graph)
            run = jax.jit(lambda w, m, x: net.apply({"weights": w, "masks": m}, x, record=True))
            outs, recs = [], {k: [] for k in layers}
            for start in range(0, len(images), batch_size):
                o, s = run(nv.weights, nv.masks, images[start:start + batch_size])
                outs.append(np.asarray(o))
                for k in layers:
                    recs[k].append(np.asarray(s[k]))
            outputs, spikes = np.concatenate(outs, 1), {k: np.concatenate(v, 1) for k, v in recs.items()}
        else:
            from jsnn.interop.torch_sims import norse_module, run_torch, snntorch_module

            net = snntorch_module(graph) if sim == "snntorch" else norse_module(graph)
            outputs, recs = run_torch(net, images.transpose(0, 3, 1, 2), T, batch_size)
            spikes = {k: recs[_torch_name(k, recs)] for k in layers}
        report["simulators"][sim] = _summary(ref_logits, ref_spikes, potentials, threshold, outputs, spikes,
                                             labels)
    return report


def _torch_name(node: str, recorded: dict) -> str:
    """The importer's module name for NIR node ``node`` (nirtorch replaces '.' by '_')."""
    for candidate in (node, node.replace(".", "_")):
        if candidate in recorded:
            return candidate
    raise KeyError(f"the imported network has no neuron for NIR node {node} (has {sorted(recorded)})")
