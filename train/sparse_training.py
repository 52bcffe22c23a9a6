"""Sparse training from scratch: SET (Mocanu et al. 2018), RigL (Evci et al. 2020), or one-shot pruning
at initialisation (--algorithm static: SNIP, Lee et al. 2019; random; magnitude).

The network starts at --sparsity (per-layer densities from --distribution) and keeps it: every
--update-every steps each layer drops its smallest-magnitude weights and grows as many (random for
SET, largest dense gradient for RigL), the drop fraction cosine-decayed to 0 at --end-fraction of
training. --algorithm static draws the mask once at initialisation by --criterion (scored on
--calibration-batches training batches; the criterion's distribution unless --distribution says) and
keeps it fixed while the weights train. Writes WORKDIR/results.json (measured and per-layer sparsity)
and WORKDIR/ticket.npz.

    python train/sparse_training.py --algorithm rigl --sparsity 0.9               # digits, offline
    python train/sparse_training.py --algorithm set --sparsity 0.9 --distribution uniform
    python train/sparse_training.py --algorithm static --criterion snip --sparsity 0.9   # SNIP, global
    python train/sparse_training.py --algorithm rigl --dataset cifar10            # ResNet-19, T = 5, 300 epochs
    python train/sparse_training.py --algorithm energy --synops-budget 200000    # measured SynOps/image <= budget
    python train/ticket.py report --workdir runs/sparse_training_rigl_digits_0.90  # the ticket's cost
"""
from __future__ import annotations

import argparse
import os

from flags import add_training_flags, parse_args, run_cleanly, run_outputs, start_run, training_config

from jsnn.config import SPARSE_TRAINING_UPDATE_EVERY
from jsnn.metrics import log
from jsnn.runs import energy, sparse_training
from jsnn.sparsity.criteria import CRITERIA
from jsnn.sparsity.distributions import DISTRIBUTIONS

ENERGY = "energy"  # jsnn/runs/energy.py: a SynOps-budget variant of Shi et al.'s weight and neuron mask learning


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = sparse_training.SparseTrainingOptions()
    g = p.add_argument_group("sparse training")
    g.add_argument("--algorithm", choices=sparse_training.ALGORITHMS + (ENERGY,), default=d.algorithm,
                   help="grow by random scores (SET) or by the largest dense gradient (RigL); static: prune once "
                        "at initialisation by --criterion, the mask fixed afterwards; energy: neurons and weights "
                        "pruned under --synops-budget (a SynOps-budget variant of Shi et al. 2024's mask learning)")
    g.add_argument("--sparsity", type=float, default=d.sparsity, help="fraction of the weights removed (RigL: 0.9)")
    g.add_argument("--distribution", choices=sorted(DISTRIBUTIONS), default=d.distribution,
                   help="per-layer densities (unset: erk for set / rigl, which take erk or uniform; static: the "
                        "criterion's own, global for snip)")
    g.add_argument("--criterion", choices=sorted(CRITERIA), default=d.criterion,
                   help="static: the criterion scoring the initial weights (snip: |w * dL/dw|, Lee et al. 2019)")
    g.add_argument("--calibration-batches", type=int, default=d.calibration_batches,
                   help="static: training batches the criterion's inputs (snip: gradients) are averaged over")
    g.add_argument("--update-every", type=int, help="steps between mask updates (unset: rigl's 100 on CIFAR, "
                   f"{SPARSE_TRAINING_UPDATE_EVERY['digits']} on digits)")
    g.add_argument("--end-fraction", type=float, default=d.end_fraction,
                   help="fraction of the training steps after which the masks stay fixed (RigL: 0.75)")
    g.add_argument("--drop-fraction", type=float, default=d.drop_fraction,
                   help="fraction of each layer's kept weights dropped at step 0, cosine-decayed (rigl: 0.3)")
    g.add_argument("--optimizer", choices=sparse_training.OPTIMIZERS, default=d.optimizer,
                   help="sgd (momentum, weight decay added to the gradient), adam, or adamw (decoupled decay); "
                        "--lr and --weight-decay apply to each")
    g.add_argument("--synops-budget", type=float, help="energy: SynOps per image the final ticket may need, "
                   "measured on the training images as the cost report counts them (required with --algorithm energy)")
    g.add_argument("--finetune-epochs", type=int, help="energy: epochs of finetuning after the --epochs of search "
                   f"(unset: {energy.ENERGY_PRESETS['digits']['finetune_epochs']} on digits)")
    add_training_flags(p)
    return p


def options_of(args: argparse.Namespace) -> sparse_training.SparseTrainingOptions:
    return sparse_training.SparseTrainingOptions(
        algorithm=args.algorithm, sparsity=args.sparsity, distribution=args.distribution,
        update_every=args.update_every, end_fraction=args.end_fraction, drop_fraction=args.drop_fraction,
        optimizer=args.optimizer, criterion=args.criterion, calibration_batches=args.calibration_batches)


def main():
    args = parse_args(parser(), method="sparse_training")
    start_run(args)
    config = training_config(args, "sparse_training")
    if args.algorithm == ENERGY:
        return run_energy(args, config)
    options = options_of(args).resolve(config)
    name = options.criterion if options.algorithm == sparse_training.STATIC else options.algorithm
    workdir = args.workdir or os.path.join("runs", f"sparse_training_{name}_{config.dataset}_{options.sparsity:.2f}")
    results = sparse_training.run(config, options, workdir, outputs=run_outputs(args))
    entry = results["runs"][0]
    log(f"{results['label']} on {config.dataset}: sparsity {entry['sparsity']:.4f}, "
        f"test accuracy {entry['test_accuracy']:.4f} ({workdir})")


def run_energy(args: argparse.Namespace, config) -> None:
    options = energy.EnergyOptions(synops_budget=args.synops_budget, finetune_epochs=args.finetune_epochs,
                                   optimizer=args.optimizer).resolve(config)
    workdir = args.workdir or os.path.join("runs", f"energy_{config.dataset}_{options.synops_budget:g}")
    results = energy.run(config, options, workdir, outputs=run_outputs(args))
    e = results["runs"][-1]
    log(f"{results['label']} on {config.dataset}: {e['synops_per_image']:.0f} SynOps per image (measured, budget "
        f"{options.synops_budget:g}), sparsity {e['sparsity']:.4f}, removed channels {e['removed_channels']}, "
        f"test accuracy {e['test_accuracy']:.4f} ({workdir})")


if __name__ == "__main__":
    run_cleanly(main)
