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
    python train/sparse_training.py --algorithm energy --synops-budget 200000    # train/energy.py's method
    python train/sparse_training.py --algorithm shi                               # train/shi.py's method
    python train/ticket.py report --workdir runs/sparse_training_rigl_digits_0.90  # the ticket's cost
"""
from __future__ import annotations

import functools
import os
import sys

import energy as energy_program
import shi as shi_program
from flags import begin, method_parser, run_cleanly, run_outputs

from jsnn.metrics import log
from jsnn.runs import sparse_training
from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method

METHOD = "sparse_training"
ENERGY = "energy"  # --algorithm energy: the energy method (train/energy.py), kept here as the docs spell it
SHI = "shi"  # --algorithm shi: Shi et al.'s method (train/shi.py)
ALIASES = {ENERGY: energy_program, SHI: shi_program}
parser = functools.partial(method_parser, METHOD, __doc__)  # the method's flags, then TrainConfig's


def alias_argv(argv: list[str], name: str) -> list[str] | None:
    """``argv`` less ``--algorithm NAME`` when it asks for that method, else None."""
    for i, arg in enumerate(argv):
        if arg == "--algorithm" and i + 1 < len(argv) and argv[i + 1] == name:
            return argv[:i] + argv[i + 2:]
        if arg == f"--algorithm={name}":
            return argv[:i] + argv[i + 1:]
    return None


def energy_argv(argv: list[str]) -> list[str] | None:
    """``argv`` less ``--algorithm energy`` when it asks for the energy method, else None."""
    return alias_argv(argv, ENERGY)


def main(argv=None, hooks: RunHooks = RunHooks()):
    argv = sys.argv[1:] if argv is None else list(argv)
    for name, program in ALIASES.items():
        alias = alias_argv(argv, name)
        if alias is not None:
            return program.main(alias, hooks)
    args, config, options = begin(parser(), argv, METHOD)
    name = options.criterion if options.algorithm == sparse_training.STATIC else options.algorithm
    workdir = args.workdir or os.path.join("runs", f"sparse_training_{name}_{config.dataset}_{options.sparsity:.2f}")
    results = run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)
    entry = results["runs"][0]
    log(f"{results['label']} on {config.dataset}: sparsity {entry['sparsity']:.4f}, "
        f"test accuracy {entry['test_accuracy']:.4f} ({workdir})")


if __name__ == "__main__":
    run_cleanly(main)
