"""Methods as plug-ins: each is one module (a ``Plan`` for ``runs/run.py``, an options dataclass and a
``run``) plus one entry here. Programs, benchmarks and tests look methods up by name; every program in
train/ is a thin main over ``run_method`` (``train/flags.py`` makes the method's flags from its options).

    register_method(MethodEntry("mine", MyOptions, run_mine, preset="imp"))
    run_method("mine", config, MyOptions(...), workdir)

Every method's ``run`` takes ``(config, options, workdir, *, trainer=None, outputs=Outputs(),
hooks=RunHooks())`` and returns results.json's dict.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from jsnn.config import TrainConfig
from jsnn.runs import dense, edge_popup, energy, imp, shi, sparse_training
from jsnn.runs.outputs import Outputs, RunHooks


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    name: str
    options: type  # the method's options dataclass (its fields made with jsnn.config.setting: one flag each)
    run: Callable[..., dict]  # run(config, options, workdir, *, trainer, outputs, hooks) -> results.json's dict
    preset: str  # the TrainConfig presets it takes (jsnn.config.PRESETS[preset]): config.resolve(entry.preset)
    summary: str = ""  # one line: the program's help says it above the method's flags


METHODS: dict[str, MethodEntry] = {}


def register_method(entry: MethodEntry) -> MethodEntry:
    METHODS[entry.name] = entry
    return entry


def get_method(name: str) -> MethodEntry:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def run_method(name: str, config: TrainConfig, options, workdir: str, *, trainer=None,
               outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """Runs method ``name`` in ``workdir`` (resuming it if it was interrupted); its results."""
    entry = get_method(name)
    if not isinstance(options, entry.options):
        raise TypeError(f"method {name!r} takes {entry.options.__name__}, got {type(options).__name__}")
    return entry.run(config, options, workdir, trainer=trainer, outputs=outputs, hooks=hooks)


register_method(MethodEntry("dense", dense.DenseOptions, dense.run, "dense", "the dense SNN, weights trained"))
register_method(MethodEntry("edge_popup", edge_popup.EdgePopupOptions, edge_popup.run, "edge_popup",
                            "edge-popup: scores of frozen random weights trained, one run per sparsity"))
register_method(MethodEntry("imp", imp.IMPOptions, imp.run, "imp",
                            "iterative pruning with rewinding; criteria, controls and early-bird"))
register_method(MethodEntry("sparse_training", sparse_training.SparseTrainingOptions, sparse_training.run,
                            "sparse_training", "SET / RigL: sparse from scratch, masks updated inside the step; "
                            "static: pruned once at initialisation"))
register_method(MethodEntry("energy", energy.EnergyOptions, energy.run, "sparse_training",
                            "neurons and weights pruned under a SynOps budget (Shi et al. 2024), then finetuned"))
register_method(MethodEntry("shi", shi.ShiOptions, shi.run, "shi",
                            "Shi et al. 2024 as published: weight and per-neuron masks learned under a fixed "
                            "penalty, then fixed and finetuned"))
