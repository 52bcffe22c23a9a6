"""Edge-popup on SNNs: find a sub-network of a random SNN without training its weights.

    python train/edge_popup.py                                  # digits, sparsity 0.5, offline
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --dense-baseline train
    python train/edge_popup.py --dataset cifar100               # the paper's experiment (VGG-16, T=5, 300 epochs)
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --control random --workdir runs/ep_floor  # the floor
"""
from __future__ import annotations

import argparse
import os

from flags import add_training_flags, floats, run_cleanly, start_run, training_config

from jsnn.runs import edge_popup


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsity", type=floats, default=None,
                   help="fraction of weights REMOVED per layer, one value or a list (default 0.5; "
                        "the paper sweeps 0.1,0.3,0.5,0.7,0.9)")
    p.add_argument("--dense-encoding", action="store_true", help="keep the first conv dense")
    p.add_argument("--dense-classifier", action="store_true", help="keep the last linear layer dense")
    p.add_argument("--dense-baseline", help="'train' to train the dense network too, or its workdir")
    p.add_argument("--distribution", choices=["uniform", "erk"], default="uniform",
                   help="per-layer sparsity: uniform (edge-popup's) or erk (Evci et al. 2020) at the same total")
    p.add_argument("--control", choices=["random"],
                   help="random: no search; a random mask of each level's per-layer sparsity on the same frozen "
                        "weights, BN statistics recalibrated on the training set (the floor the search must beat)")
    add_training_flags(p)
    args = p.parse_args()
    start_run(args)
    config = training_config(args, "edge_popup")
    sparsities = args.sparsity or ((0.1, 0.3, 0.5, 0.7, 0.9) if config.dataset.startswith("cifar") else (0.5,))
    options = edge_popup.EdgePopupOptions(sparsities=sparsities, dense_encoding=args.dense_encoding,
                                          dense_classifier=args.dense_classifier, dense_baseline=args.dense_baseline,
                                          distribution=args.distribution, control=args.control)
    workdir = args.workdir or os.path.join("runs", f"edge_popup_{config.dataset}_{config.model}")
    edge_popup.run(config, workdir, options)


if __name__ == "__main__":
    run_cleanly(main)
