"""Neuron and weight pruning under an energy budget (Shi et al., ICLR 2024): the run ends with a ticket
whose SynOps per image, measured as the cost report counts them, are at most --synops-budget
(jsnn/runs/energy.py; docs/methods.md, "Energy-budget pruning").

    python train/energy.py --synops-budget 200000                         # digits, offline
    python train/sparse_training.py --algorithm energy --synops-budget 200000   # the same run
    python train/export.py --workdir runs/energy_digits_200000 --drop-removed-channels --check jsnn,snntorch
"""
from __future__ import annotations

import functools
import os

from flags import begin, method_parser, run_cleanly, run_outputs

from jsnn.metrics import log
from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method

METHOD = "energy"
parser = functools.partial(method_parser, METHOD, __doc__)  # the method's flags, then TrainConfig's


def main(argv=None, hooks: RunHooks = RunHooks()):
    args, config, options = begin(parser(), argv, METHOD)
    workdir = args.workdir or os.path.join("runs", f"energy_{config.dataset}_{options.synops_budget:g}")
    results = run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)
    e = results["runs"][-1]
    log(f"{results['label']} on {config.dataset}: {e['synops_per_image']:.0f} SynOps per image (measured, budget "
        f"{options.synops_budget:g}), sparsity {e['sparsity']:.4f}, removed channels {e['removed_channels']}, "
        f"test accuracy {e['test_accuracy']:.4f} ({workdir})")


if __name__ == "__main__":
    run_cleanly(main)
