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

from jsnn.interop.compare import agreement, layer_spike_recorder
from jsnn.interop.nir_import import from_nir, graph_metadata
from jsnn.interop.torch_sims import norse_module, run_torch, snntorch_module  # torch is imported when one is run
from jsnn.objective import predictions, preprocess


def _runner(sim, graph, layers, T):
    """images [N, H, W, C] or event frames [N, T, H, W, C] -> (outputs [T, N, n], {layer: spikes [T, N, ...]})
    in ``sim``."""
    if sim == "jsnn":
        net, nv = from_nir(graph)
        run = jax.jit(lambda w, m, x: net.apply({"weights": w, "masks": m}, x, record=True))

        def jsnn_run(x):
            o, s = run(nv.weights, nv.masks, x)
            return np.asarray(o), {k: np.asarray(s[k]) for k in layers}

        return jsnn_run
    net = snntorch_module(graph) if sim == "snntorch" else norse_module(graph)

    def torch_run(x):
        o, recs = run_torch(net, np.moveaxis(x, -1, -3), T, len(x))  # channel-first: [N, (T,) C, H, W]
        return o, {k: recs[_torch_name(k, recs)] for k in layers}

    return torch_run


def check_export(model, variables, graph, dataset, simulators, batch_size: int = 120,
                 max_images: int | None = None) -> dict:
    """Runs the first ``max_images`` (default: all) test images through the jsnn ticket and
    through ``graph`` in each of ``simulators`` ("jsnn", "snntorch", "norse"), batch by batch."""
    meta = graph_metadata(graph)
    layers = [n for n in str(meta["lif_layers"]).split(",") if n]
    T = int(meta["timesteps"])
    n = len(dataset.test_images) if max_images is None else min(max_images, len(dataset.test_images))
    labels = np.asarray(dataset.test_labels[:n])
    threshold = float(model.lif.threshold)
    record = layer_spike_recorder(model, layers)
    runners = {sim: _runner(sim, graph, layers, T) for sim in simulators}
    tally = {sim: {"spikes": 0, "spikes_agree": 0, "per_layer_agree": dict.fromkeys(layers, 0),
                   "per_layer_total": dict.fromkeys(layers, 0), "same_prediction": 0, "correct": 0,
                   "max_output_difference": 0.0, "origins": [], "consequent_flips": 0} for sim in simulators}
    ref_correct = 0
    for start in range(0, n, batch_size):
        images = np.asarray(preprocess(dataset.test_images[start:min(start + batch_size, n)], dataset.mean,
                                       dataset.std))
        y = labels[start:start + len(images)]
        ref_logits, ref_spikes, potentials = record(variables, images)
        ref_pred = np.asarray(predictions(ref_logits))
        ref_correct += int(np.sum(ref_pred == y))
        for sim, run in runners.items():
            outputs, spikes = run(images)
            a = agreement(ref_spikes, spikes, potentials, threshold)
            t = tally[sim]
            t["spikes"] += a["spikes"]
            t["spikes_agree"] += a["agree"]
            for k in layers:
                t["per_layer_agree"][k] += a["per_layer_agree"][k]
                t["per_layer_total"][k] += ref_spikes[k].size
            pred = np.asarray(predictions(np.asarray(outputs)))
            t["same_prediction"] += int(np.sum(pred == ref_pred))
            t["correct"] += int(np.sum(pred == y))
            t["max_output_difference"] = max(t["max_output_difference"],
                                             float(np.max(np.abs(np.asarray(outputs) - ref_logits))))
            t["origins"].extend(a["origin_distance"])
            t["consequent_flips"] += a["consequences"]
    report = {"jsnn_accuracy": ref_correct / n, "timesteps": T, "images": n, "lif_layers": layers,
              "simulators": {}}
    for sim, t in tally.items():
        d = np.sort(np.asarray(t["origins"]))
        report["simulators"][sim] = {
            "spikes": t["spikes"],
            "spikes_agree": t["spikes_agree"],
            "spike_agreement": t["spikes_agree"] / t["spikes"],
            "per_layer": {k: t["per_layer_agree"][k] / t["per_layer_total"][k] for k in layers},
            "images": n,
            "prediction_agreement": t["same_prediction"] / n,
            "accuracy": t["correct"] / n,
            "max_output_difference": t["max_output_difference"],
            "origin_flips": int(d.size),  # flips whose inputs and past agree (compare.agreement)
            "origin_max_distance_to_threshold": float(d.max()) if d.size else None,
            "origin_distances": d.tolist()[:100],
            "consequent_flips": t["consequent_flips"],
        }
    return report


def _torch_name(node: str, recorded: dict) -> str:
    """The importer's module name for NIR node ``node`` (nirtorch replaces '.' by '_')."""
    for candidate in (node, node.replace(".", "_")):
        if candidate in recorded:
            return candidate
    raise KeyError(f"the imported network has no neuron for NIR node {node} (has {sorted(recorded)})")
