"""Iterative magnitude pruning with rewinding, and the paper's SF criterion (SF-IMP-1, SF-IMP-2).

    python train/imp.py --criterion sf                      # the paper's CIFAR-100 experiment (ResNet-19, T=5)
    python train/imp.py --dataset digits --rounds 5         # offline, minutes on 2 CPU cores
    python train/imp.py --dataset digits --rounds 5 --criterion sf --dns --seeds 0,1,2
    python train/imp.py --compare runs/imp_a runs/imp_b --out fig.png   # overlay finished runs
    python train/imp.py --dataset digits --rounds 3 --control reinit    # ticket in WORKDIR/ticket, then the control
    python train/imp.py --dataset digits --rounds 5 --early-bird        # rounds end once the mask has settled
    python train/imp.py --dataset digits --rounds 5 --sparsity-type channel   # whole output channels pruned
    python train/imp.py --dataset digits --rounds 2 --sparsity-type 2:4       # one pruning round, to 2:4
    python train/imp.py --config configs/sf_imp2_cifar100_resnet19.py --config.rounds=5   # an experiment config

With several --seeds each seed runs in WORKDIR/seed_N and WORKDIR/accuracy_vs_sparsity.png
shows mean ± std over them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from flags import add_training_flags, choices_of, parse_args, run_cleanly, run_outputs, start_run, training_config

from jsnn.config import IMP_REWIND_EPOCH
from jsnn.metrics import log
from jsnn.runs import imp
from jsnn.runs.controls import CONTROLS
from jsnn.runs.results import compare_plot
from jsnn.sparsity import patterns


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = imp.IMPOptions()
    g = p.add_argument_group("pruning")
    g.add_argument("--criterion", choices=choices_of("criteria"), default=d.criterion)
    g.add_argument("--dns", action="store_true", help="SF-IMP-2: dynamic network surgery on encoding/linear layers")
    g.add_argument("--rounds", type=int, default=d.rounds, help="counting the dense round 0 (Kim et al.: 15)")
    g.add_argument("--prune-rate", type=float, default=d.prune_rate, help="of the remaining weights, per round")
    g.add_argument("--rewind-epoch", type=int, help="epoch of round 0 to rewind to (0 = init; unset: CIFAR "
                   f"{IMP_REWIND_EPOCH['cifar']}, digits {IMP_REWIND_EPOCH['digits']})")
    g.add_argument("--scope", choices=choices_of("distributions"),
                   help="sparsity distribution: global (default for magnitude), uniform, erk, or matched (default "
                        "for sf: each layer loses what global magnitude would take, the criterion picks which)")
    g.add_argument("--calibration-batches", type=int, default=d.calibration_batches,
                   help="training batches for the SF firing statistics")
    g.add_argument("--sparsity-type", type=patterns.flag_value, default=d.sparsity_type,
                   metavar="|".join(patterns.sparsity_type_names()),
                   help="the pattern each round's masks keep: unstructured (any weights), channel (whole output "
                        "channels; each layer's count rounded to whole channels) or N:M, e.g. 2:4 (n of every m "
                        "weights along the input axis; round 1 prunes straight to it, so --rounds 2)")
    g = p.add_argument_group("lottery-ticket controls and early-bird tickets")
    g.add_argument("--control", choices=CONTROLS,
                   help="reinit: each round's ticket mask with fresh weights (another seed); random: a random mask "
                        "with the ticket's per-layer counts on its rewind point; ticket: the tickets of --ticket "
                        "retrained for full rounds. Without --ticket the ticket run goes to WORKDIR/ticket first")
    g.add_argument("--ticket", metavar="WORKDIR", help="the IMP run whose tickets a --control run takes "
                   "(with --seeds: WORKDIR/seed_N)")
    g.add_argument("--early-bird", action="store_true",
                   help="end each round once the mask pruning would give has settled (You et al. 2020)")
    g.add_argument("--early-bird-window", type=int, default=d.early_bird_window,
                   help="epochs whose masks must agree (You et al.: 5)")
    g.add_argument("--early-bird-threshold", type=float, default=d.early_bird_threshold,
                   help="largest normalised Hamming distance between them (You et al.: 0.1)")
    g = p.add_argument_group("runs")
    g.add_argument("--seeds", help="comma-separated seeds, each run in WORKDIR/seed_N (overrides --seed)")
    g.add_argument("--compare", nargs="+", metavar="WORKDIR", help="only overlay finished runs into --out")
    g.add_argument("--out", default="imp_comparison.png", help="figure written by --compare")
    add_training_flags(p, default_dataset="cifar100")
    return p


def imp_options(args: argparse.Namespace) -> imp.IMPOptions:
    return imp.IMPOptions(rounds=args.rounds, prune_rate=args.prune_rate, rewind_epoch=args.rewind_epoch,
                          criterion=args.criterion, scope=args.scope, dns=args.dns,
                          calibration_batches=args.calibration_batches, control=args.control,
                          ticket_dir=args.ticket, early_bird=args.early_bird,
                          early_bird_window=args.early_bird_window, early_bird_threshold=args.early_bird_threshold,
                          sparsity_type=args.sparsity_type)


def main():
    args = parse_args(parser(), method="imp")
    if args.compare:
        log(f"wrote {compare_plot(args.compare, args.out)}")
        return
    start_run(args)
    config = training_config(args, "imp")
    options = imp_options(args).resolve(config)
    name = imp.imp_label(options).replace(" ", "").replace("(", "_").replace(")", "").replace(",", "_")
    name = name.replace(":", "of")
    workdir = args.workdir or os.path.join("runs", f"imp_{config.dataset}_{config.model}_{name}")
    if not args.seeds:
        imp.run_imp(config, options, workdir, outputs=run_outputs(args))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    dirs = [os.path.join(workdir, f"seed_{s}") for s in seeds]
    for seed, seed_dir in zip(seeds, dirs):
        ticket = os.path.join(args.ticket, f"seed_{seed}") if args.ticket else None
        imp.run_imp(dataclasses.replace(config, seed=seed), dataclasses.replace(options, ticket_dir=ticket), seed_dir,
                    outputs=run_outputs(args))
    log(f"wrote {compare_plot(dirs, os.path.join(workdir, 'accuracy_vs_sparsity.png'))}")


if __name__ == "__main__":
    run_cleanly(main)
