"""Train the weights of a dense SNN (the reference that pruning is compared with).

    python train/dense.py                       # digits, offline, about a minute on 2 CPU cores
    python train/dense.py --dataset cifar100    # ResNet-19, T=5, Kim et al.'s settings
    python train/dense.py --config configs/digits.py --config.epochs=5   # an experiment config, one value changed
"""
from __future__ import annotations

import functools
import os

from flags import begin, method_parser, run_cleanly, run_outputs

from jsnn.metrics import log
from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method

METHOD = "dense"
parser = functools.partial(method_parser, METHOD, __doc__)  # the method's flags, then TrainConfig's


def main(argv=None, hooks: RunHooks = RunHooks()):
    args, config, options = begin(parser(), argv, METHOD)
    workdir = args.workdir or os.path.join("runs", f"dense_{config.dataset}_{config.model}")
    entry = run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)["runs"][0]
    log(f"dense {config.model} on {config.dataset}: test accuracy {entry['test_accuracy']:.4f}")


if __name__ == "__main__":
    run_cleanly(main)
