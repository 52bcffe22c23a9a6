"""Train the weights of a dense SNN (the reference that pruning is compared with).

    python train/dense.py                       # digits, offline, about a minute on 2 CPU cores
    python train/dense.py --dataset cifar100    # ResNet-19, T=5, Kim et al.'s settings
    python train/dense.py --config configs/digits.py --config.epochs=5   # an experiment config, one value changed
"""
from __future__ import annotations

import argparse
import os

from flags import add_training_flags, parse_args, run_cleanly, run_outputs, start_run, training_config

from jsnn.metrics import log
from jsnn.runs.dense import train_dense


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(p)
    return p


def main():
    args = parse_args(parser(), method="dense")
    start_run(args)
    config = training_config(args, "dense")
    workdir = args.workdir or os.path.join("runs", f"dense_{config.dataset}_{config.model}")
    entry = train_dense(config, workdir, outputs=run_outputs(args))
    log(f"dense {config.model} on {config.dataset}: test accuracy {entry['test_accuracy']:.4f}")


if __name__ == "__main__":
    run_cleanly(main)
