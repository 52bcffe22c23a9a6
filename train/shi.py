"""Shi et al.'s weight and neuron mask learning as published (ICLR 2024): a logit per weight and per neuron
position, a fixed penalty lambda * (c_n * neurons + c_w * weights), the masks fixed at m > 0, then finetuned
(jsnn/runs/shi.py; docs/methods.md, "Shi et al.'s mask learning").

    python train/shi.py                                              # digits, offline
    python train/shi.py --penalty-lambda 1e-5                        # a sparser ticket
    python train/sparse_training.py --algorithm shi                  # the same run
    python train/shi.py --config configs/shi_cifar10_cifar10net.py --data-dir DATA   # the paper's CIFAR-10 run
    python train/ticket.py report --workdir runs/shi_digits_1e-06    # the ticket's cost, gated neurons counted
"""
from __future__ import annotations

import functools
import os

from flags import begin, method_parser, run_cleanly, run_outputs

from jsnn.metrics import log
from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method

METHOD = "shi"
parser = functools.partial(method_parser, METHOD, __doc__)  # the method's flags, then TrainConfig's


def main(argv=None, hooks: RunHooks = RunHooks()):
    args, config, options = begin(parser(), argv, METHOD)
    workdir = args.workdir or os.path.join("runs", f"shi_{config.dataset}_{options.penalty_lambda:g}")
    results = run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)
    e = results["runs"][-1]
    log(f"{results['label']} on {config.dataset}: weight sparsity {e['sparsity']:.4f}, connections "
        f"{100 * e['connection_fraction']:.2f} % of the dense network's, neurons kept {e['neuron_fraction']:.4f}, "
        f"test accuracy {e['test_accuracy']:.4f} ({workdir})")


if __name__ == "__main__":
    run_cleanly(main)
