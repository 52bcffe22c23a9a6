"""Edge-popup on SNNs: find a sub-network of a random SNN without training its weights.

    python train/edge_popup.py                                  # digits, sparsity 0.5, offline
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --dense-baseline train
    python train/edge_popup.py --sparsity-type 2:4              # 2 of every 4 weights along the input axis
    python train/edge_popup.py --dataset cifar100               # the paper's experiment (VGG-16, T=5, 300 epochs)
    python train/edge_popup.py --sparsity 0.1,0.3,0.5,0.7,0.9 --control random --workdir runs/ep_floor  # the floor
    python train/edge_popup.py --config configs/edge_popup_cifar100_vgg16.py --config.sparsity=0.5  # one level
"""
from __future__ import annotations

import functools
import os

from flags import begin, method_parser, run_cleanly, run_outputs

from jsnn.runs.outputs import RunHooks
from jsnn.runs.registry import run_method
from jsnn.sparsity import patterns

METHOD = "edge_popup"
parser = functools.partial(method_parser, METHOD, __doc__)  # the method's flags, then TrainConfig's


def main(argv=None, hooks: RunHooks = RunHooks()):
    args, config, options = begin(parser(), argv, METHOD)
    kind = "" if options.sparsity_type == patterns.UNSTRUCTURED else "_" + options.sparsity_type.replace(":", "of")
    workdir = args.workdir or os.path.join("runs", f"edge_popup_{config.dataset}_{config.model}{kind}")
    run_method(METHOD, config, options, workdir, outputs=run_outputs(args), hooks=hooks)


if __name__ == "__main__":
    run_cleanly(main)
