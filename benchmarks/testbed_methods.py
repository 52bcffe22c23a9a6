"""Every registered method on the field's testbed networks (issue 30 item 3): one short run each, through
``run_method`` as the programs call it, on made-up data in each network's input shape.

    python benchmarks/testbed_methods.py                  # writes benchmarks/results/testbed_methods.{json,md}

The networks at a sliver of their width (as tests/test_testbed_models.py builds them): SEW-ResNet-18 on
32 x 32 RGB images, VGGSNN on 2-channel event frames (16 x 16, one frame per timestep), Shi et al.'s CIFAR-10
network on 32 x 32 RGB. Each method at its TrainConfig preset with T = 2, batch 16, 2 epochs of 64 random
images (IMP: 2 rounds): the runs say that each method trains, prunes and writes its results and ticket on each
network, not what accuracy it reaches (the labels are random). The test suite runs the energy method's step on
these networks (tests/test_recipes.py) and every method on the digits CNN (tests/test_registry.py); this covers
the rest, at a cost the suite cannot carry.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jsnn import xla_flags  # noqa: E402

xla_flags.configure()

from benchmarks.common import shared_machine, write_results  # noqa: E402
from jsnn.config import TrainConfig  # noqa: E402
from jsnn.data.augment import AugmentConfig  # noqa: E402
from jsnn.data.datasets import ArrayDataset  # noqa: E402
from jsnn.efficiency import measure  # noqa: E402
from jsnn.models import build_model  # noqa: E402
from jsnn.runs import dense, edge_popup, energy, imp, registry, shi, sparse_training  # noqa: E402
from jsnn.runs.outputs import Outputs  # noqa: E402
from jsnn.trainer import Trainer  # noqa: E402
from jsnn.variables import init_variables  # noqa: E402

T, BATCH, IMAGES, EPOCHS = 2, 16, 64, 2
NETWORKS = {  # model, width, one example's shape
    "sew_resnet18": ("sew_resnet18", 1 / 16, (32, 32, 3)),
    "vggsnn": ("vggsnn", 1 / 16, (T, 16, 16, 2)),
    "cifar10net": ("cifar10net", 1 / 32, (32, 32, 3)),
}
# (registered method, options, label)
CASES = [
    ("dense", dense.DenseOptions(), "dense"),
    ("imp", imp.IMPOptions(rounds=2), "IMP (magnitude)"),
    ("imp", imp.IMPOptions(rounds=2, criterion="sf"), "SF-IMP-1"),
    ("edge_popup", edge_popup.EdgePopupOptions(sparsities=(0.5,)), "edge-popup 50 %"),
    ("sparse_training", sparse_training.SparseTrainingOptions(algorithm="set", sparsity=0.9, update_every=2),
     "SET 90 %"),
    ("sparse_training", sparse_training.SparseTrainingOptions(algorithm="rigl", sparsity=0.9, update_every=2),
     "RigL 90 %"),
    ("sparse_training", sparse_training.SparseTrainingOptions(algorithm="static", criterion="snip", sparsity=0.9),
     "static SNIP 90 %"),
    # its budget: half the dense network's SynOps per training image at initialisation (one_run)
    ("energy", energy.EnergyOptions(synops_budget=1.0, finetune_epochs=1), "energy budget, half the dense SynOps"),
    ("shi", shi.ShiOptions(finetune_epochs=1), "Shi et al."),
]


def made_up(shape: tuple[int, ...], classes: int = 10) -> ArrayDataset:
    rng = np.random.default_rng(0)
    events = len(shape) == 4
    images = rng.integers(0, 4 if events else 256, (IMAGES + BATCH,) + shape, dtype=np.uint8)
    labels = rng.integers(0, classes, IMAGES + BATCH).astype(np.int32)
    channels = shape[-1]
    return ArrayDataset("made_up", images[:IMAGES], labels[:IMAGES], images[IMAGES:], labels[IMAGES:], classes,
                        (0.0,) * channels if events else (127.5,) * channels,
                        (1.0,) * channels if events else (64.0,) * channels, AugmentConfig(),
                        timesteps=T if events else None)


def one_run(network: str, method: str, options, workdir: str) -> dict:
    model, width, shape = NETWORKS[network]
    data = made_up(shape)
    preset = registry.get_method(method).preset
    config = TrainConfig(dataset="cifar10", model=model, width=width, timesteps=T, batch_size=BATCH, epochs=EPOCHS,
                         progress=False).resolve(preset)
    trainer = Trainer(config, build_model(config, data.num_classes), data)
    if method == "energy":
        dense_net = init_variables(trainer.model, jax.random.key(config.seed), (1,) + shape)
        synops = measure(trainer.model, dense_net, data.train_images, batch_size=BATCH,
                         normalize=(data.mean, data.std))["synops_per_image"]
        options = dataclasses.replace(options, synops_budget=0.5 * synops)
    started = time.perf_counter()
    results = registry.run_method(method, config, options, workdir, trainer=trainer,
                                  outputs=Outputs(plots=False, cost_report=False))
    last = results["runs"][-1]
    tickets = sorted(f for _, _, fs in os.walk(workdir) for f in fs if f.endswith(".npz"))
    out = {"synops_budget": options.synops_budget, "synops_per_image": last.get("synops_per_image"),
           "within_budget": last.get("within_budget"), "silent_layers": last.get("silent_layers"),
           "disconnected_layers": last.get("disconnected_layers")} if method == "energy" else {}
    return {**out, "ok": True, "seconds": time.perf_counter() - started, "entries": len(results["runs"]),
            "sparsity": last.get("sparsity"), "test_accuracy": last.get("test_accuracy"), "tickets": len(tickets)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "testbed_methods"))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for network in args.networks.split(","):
            for i, (method, options, label) in enumerate(CASES):
                workdir = os.path.join(root, network, str(i))
                try:
                    row = one_run(network, method, options, workdir)
                except Exception as e:  # recorded, not hidden: the table says which run failed and why
                    row = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500],
                           "trace": traceback.format_exc()[-2000:]}
                rows.append({"network": network, "method": method, "label": label, **row})
                print(f"{network:13s} {label:18s} {'ok' if row['ok'] else 'FAILED ' + row['error']}", flush=True)
    summary = {"command": "python benchmarks/testbed_methods.py",
               "machine": shared_machine("the seconds are indicative"),
               "setting": {"timesteps": T, "batch": BATCH, "images": IMAGES, "epochs": EPOCHS,
                           "networks": {k: {"model": m, "width": w, "example_shape": list(s)}
                                        for k, (m, w, s) in NETWORKS.items()}},
               "runs": rows}
    lines = ["# Every method on the testbed networks (benchmarks/testbed_methods.py)", "",
             f"Made-up data ({IMAGES} images, random labels), T = {T}, batch {BATCH}, {EPOCHS} epochs per run "
             "(IMP: 2 rounds); each network at a sliver of its width. A run passes when it trains, prunes and "
             "writes its results and tickets; accuracy on random labels means nothing.", "",
             "| network | method | passed | entries | tickets | sparsity | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = "" if r.get("sparsity") is None else f"{r['sparsity']:.3f}"
        if r.get("synops_budget"):
            why = ", ".join(f"{k.replace('_', ' ')}: {', '.join(r[k])}"
                            for k in ("silent_layers", "disconnected_layers") if r.get(k))
            sp += (f" ({r['synops_per_image']:.0f} SynOps per training image, budget {r['synops_budget']:.0f}; "
                   f"within_budget {'yes' if r['within_budget'] else 'no'}{': ' + why if why else ''})")
        lines.append(f"| {r['network']} | {r['label']} | {'yes' if r['ok'] else 'no: ' + r['error'][:120]} | "
                     f"{r.get('entries', '')} | {r.get('tickets', '')} | {sp} | {r.get('seconds', 0):.0f} |")
    write_results(args.out, summary, lines)
    if not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
