"""What a run does besides training, set by its caller: which outputs it writes, and hooks that
see each phase.

``Outputs`` switches the side products (figures; each ticket's test-set cost pass) without
touching results or tickets. ``RunHooks.on_phase(name, where)`` is called as a run enters each
phase, with where it stands (``segment``, ``epoch``, ``batch`` as they apply):

    prepare      data, model and trainer built, workdir claimed
    train        a segment's training starts (or resumes)
    batch        a training step finished (``batch``: steps done in the epoch)
    epoch_end    an epoch finished (``epoch``: epochs done); the method's end-of-epoch work follows
    checkpoint   a checkpoint is written; the phase it interrupted is entered again after it
    evaluate     the finished segment is evaluated on the test set
    ticket       its ticket is written
    cost_report  its ticket's cost pass
    results      results.json is written
    plots        figures are drawn
    prune        the next segment's masks are computed (IMP)

Benchmarks time phases with it, tests inject faults into one; neither needs to touch a module.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

PHASES = ("prepare", "train", "batch", "epoch_end", "checkpoint", "evaluate", "ticket", "cost_report", "results",
          "plots", "prune")


@dataclasses.dataclass(frozen=True)
class Outputs:
    plots: bool = True  # accuracy-vs-sparsity / -energy figures and training curves
    cost_report: bool = True  # each ticket's "efficiency" entry: a counting pass over the test set


@dataclasses.dataclass(frozen=True)
class RunHooks:
    on_phase: Callable[[str, dict], None] | None = None

    def phase(self, name: str, **where) -> None:
        if self.on_phase is not None:
            self.on_phase(name, where)

    @property
    def wants_batches(self) -> bool:
        return self.on_phase is not None
