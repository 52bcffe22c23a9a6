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

import dataclasses
import os

from flags import method_parser, method_settings, parse_args, run_cleanly, run_outputs, start_run

from jsnn.metrics import log
from jsnn.runs import imp
from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method
from jsnn.runs.results import compare_plot

METHOD = "imp"


def parser():
    p = method_parser(METHOD, __doc__, default_dataset="cifar100")
    g = p.add_argument_group("runs")
    g.add_argument("--seeds", help="comma-separated seeds, each run in WORKDIR/seed_N (overrides --seed)")
    g.add_argument("--compare", nargs="+", metavar="WORKDIR", help="only overlay finished runs into --out")
    g.add_argument("--out", default="imp_comparison.png", help="figure written by --compare")
    return p


def main(argv=None, hooks: RunHooks = RunHooks()):
    args = parse_args(parser(), argv, method=METHOD)
    if args.compare:
        log(f"wrote {compare_plot(args.compare, args.out)}")
        return
    start_run(args)
    config, options = method_settings(args, METHOD)
    name = imp.imp_label(options).replace(" ", "").replace("(", "_").replace(")", "").replace(",", "_")
    name = name.replace(":", "of")
    workdir = args.workdir or os.path.join("runs", f"imp_{config.dataset}_{config.model}_{name}")
    if not args.seeds:
        run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    dirs = [os.path.join(workdir, f"seed_{s}") for s in seeds]
    for seed, seed_dir in zip(seeds, dirs):
        ticket = os.path.join(options.ticket_dir, f"seed_{seed}") if options.ticket_dir else None
        run_method(METHOD, dataclasses.replace(config, seed=seed), dataclasses.replace(options, ticket_dir=ticket),
                   seed_dir, outputs=run_outputs(args), hooks=hooks)
    log(f"wrote {compare_plot(dirs, os.path.join(workdir, 'accuracy_vs_sparsity.png'))}")


if __name__ == "__main__":
    run_cleanly(main)
