"""Edge-popup on SNNs: find a sub-network of a random SNN without training its weights.

    python train/edge_popup.py                                  # digits, sparsity 0.5, offline
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --dense-baseline train
    python train/edge_popup.py --sparsity-type 2:4              # 2 of every 4 weights along the input axis
    python train/edge_popup.py --dataset cifar100               # the paper's experiment (VGG-16, T=5, 300 epochs)
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --control random --workdir runs/ep_floor  # the floor
    python train/edge_popup.py --config configs/edge_popup_cifar100_vgg16.py --config.sparsity=0.5  # one level
"""
from __future__ import annotations

import argparse
import os

from flags import (
    add_training_flags,
    choices_of,
    floats,
    parse_args,
    run_cleanly,
    run_outputs,
    start_run,
    training_config,
)

from jsnn.config import EDGE_POPUP_SPARSITIES, edge_popup_sparsities
from jsnn.runs import edge_popup
from jsnn.sparsity import patterns


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    levels = {family: ",".join(f"{s:g}" for s in v) for family, v in EDGE_POPUP_SPARSITIES.items()}
    p.add_argument("--sparsity", type=floats, default=None,
                   help="fraction of weights REMOVED per layer, one value or a list (default: digits "
                        f"{levels['digits']}; CIFAR {levels['cifar']}, the paper's sweep)")
    p.add_argument("--dense-encoding", action="store_true", help="keep the first conv dense")
    p.add_argument("--dense-classifier", action="store_true", help="keep the last linear layer dense")
    p.add_argument("--dense-baseline", help="'train' to train the dense network too, or its workdir")
    p.add_argument("--distribution", choices=choices_of("shape_distributions"), default="uniform",
                   help="per-layer sparsity: uniform (edge-popup's) or erk (Evci et al. 2020) at the same total")
    p.add_argument("--sparsity-type", type=patterns.flag_value, default=patterns.UNSTRUCTURED,
                   metavar="|".join(patterns.sparsity_type_names()),
                   help="the pattern the top-k keeps: unstructured (any weights), channel (whole output channels; "
                        "each layer's count rounded to whole channels) or N:M, e.g. 2:4 (n of every m weights along "
                        "the input axis; one level, --sparsity 1 - n/m, the default then)")
    p.add_argument("--control", choices=["random"],
                   help="random: no search; a random mask of each level's per-layer sparsity on the same frozen "
                        "weights, BN statistics recalibrated on the training set (the floor the search must beat)")
    add_training_flags(p)
    return p


def edge_popup_options(args: argparse.Namespace, config) -> edge_popup.EdgePopupOptions:
    fixed = patterns.fixed_density(args.sparsity_type)  # N:M: its one level unless --sparsity says otherwise
    default = (1.0 - fixed,) if fixed is not None else edge_popup_sparsities(config.dataset)
    return edge_popup.EdgePopupOptions(sparsities=args.sparsity or default,
                                       dense_encoding=args.dense_encoding, dense_classifier=args.dense_classifier,
                                       dense_baseline=args.dense_baseline, distribution=args.distribution,
                                       control=args.control, sparsity_type=args.sparsity_type)


def main():
    args = parse_args(parser(), method="edge_popup")
    start_run(args)
    config = training_config(args, "edge_popup")
    options = edge_popup_options(args, config)
    kind = "" if options.sparsity_type == patterns.UNSTRUCTURED else "_" + options.sparsity_type.replace(":", "of")
    workdir = args.workdir or os.path.join("runs", f"edge_popup_{config.dataset}_{config.model}{kind}")
    edge_popup.run(config, workdir, options, outputs=run_outputs(args))


if __name__ == "__main__":
    run_cleanly(main)
