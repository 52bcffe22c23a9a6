"""One run, whatever the method: claim the workdir, resume, train its segments, record each one.

A method is a ``Plan``: what the run starts from, how each segment trains, what a finished
segment's results entry says, and what happens between segments. ``Run`` does the rest the
same way for every method: the workdir claim (``workdir.run_signature`` / ``run_record``, the one
rule for each), checkpoints and resumption, evaluation, the ticket and its cost pass, results.json
with labels, figures, phases for hooks.

    dense network           one segment of weight training            (runs/dense.py)
    edge-popup sweep        one run of its own per level (a part)     (runs/edge_popup.py)
    edge-popup level        one segment of score training             (runs/edge_popup.py)
    edge-popup random floor one segment, nothing trained              (runs/edge_popup.py)
    SET / RigL / static     one segment under changing / fixed masks  (runs/sparse_training.py)
    IMP                     one segment per round, pruning in between (runs/imp.py)
    energy budget           search, then finetune                     (runs/energy.py)

A new method is one module with a ``Plan`` subclass (it writes what differs from the defaults:
``name``, ``label``, ``setup`` and usually ``entry``) and a registry entry (``runs/registry.py``).
A run made of runs of their own (``Plan.parts``: an edge-popup sweep, one per level) is executed by
``Run`` too: each part in its subdirectory, one trainer shared, the parent workdir claimed while a
part is left to run, results.json rewritten after each part.
"""
from __future__ import annotations

import functools
import os
import time

import optax

from jsnn import plots
from jsnn.config import TrainConfig
from jsnn.host_memory import release_free_memory
from jsnn.metrics import log, read_jsonl, write_json
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.results import entry_label
from jsnn.runs.segment import Position, RunCheckpoints, build_trainer, describe, train_segment
from jsnn.runs.tickets import TICKET_FILE, round_path, ticket_cost, write_ticket
from jsnn.runs.workdir import (
    METRICS,
    RESULTS,
    claim_workdir,
    drop_metrics_after,
    finished_results,
    release_workdir,
    run_record,
    run_signature,
)
from jsnn.trainer import Trainer, TrainState
from jsnn.training_rules import TrainingRule
from jsnn.variables import Variables

# Phases before which a run hands the C heap's free memory back to the system (jsnn/host_memory.py): where a
# segment starts or ends, the next programs to compile are the large ones (cost report, pruning, the steps).
# Not at every epoch: a release makes the next step fault its buffers back in, a cost for nothing when the
# epochs free and reuse the same buffers (benchmarks/freed_memory.py).
RELEASE_ENTERING = ("prepare", "evaluate", "cost_report", "prune")

# While a run goes on, its figures are redrawn after a segment only when the last drawing is this old (seconds):
# a round of a real run takes longer, so each round is drawn; a toy run's rounds of seconds are not drawn each
# time over (the figures' share of a digits run: benchmarks/results/time_to_ticket_digits*.json). A run's end
# always draws them.
FIGURE_INTERVAL_S = 60.0


class Plan:
    """A method as the run sees it, with the defaults of a one-segment method that trains under ``self.rule``
    (set by ``setup``) with the TrainConfig's optimizer and keeps nothing in its checkpoints but the
    training state. A method subclasses it and writes what differs.

    ``name`` goes into results.json as "method" (and names its options in config.json); ``label``
    names the method in figures and tables (stored in results.json, each entry and each ticket);
    ``segments`` is how many segments the run trains; ``signature`` every setting that changes its
    results (``workdir.run_signature`` of the config, the options and ``signature_fields``).
    """

    name: str = ""
    label: str = ""
    segments: int = 1
    rule: TrainingRule | None = None  # jsnn/training_rules.py: what is trained, how kernels are formed

    def __init__(self, config: TrainConfig, options=None):
        self.config, self.options = config, options

    # -- what identifies the run, and what config.json records ------------------------------------------
    def signature_fields(self) -> dict:
        """What identifies the run besides its config and options (an edge-popup level: its sparsity)."""
        return {}

    @functools.cached_property
    def signature(self) -> dict:
        return run_signature(self.name, self.config, self.options, **self.signature_fields())

    def record(self) -> dict:
        """What config.json holds besides the signature."""
        return run_record(self.name, self.config, self.options)

    # -- what the run starts from and trains ------------------------------------------------------------
    def optimizer(self, trainer: Trainer) -> optax.GradientTransformation | None:
        """The optimizer the run's states step with; None: the TrainConfig's (``trainer.optimizer``)."""
        return None

    def learning_rate(self, trainer: Trainer) -> optax.Schedule | None:
        """The weights' learning rate against the step, as the optimizer above steps with it (the training log's
        ``learning_rate``); None: the TrainConfig's schedule."""
        return None

    def setup(self, run: "Run") -> TrainState:
        """Everything the run starts from (variables, ``self.rule``); the first state (``run.new_state``)."""
        raise NotImplementedError(f"{type(self).__name__} must say what the run starts from (setup)")

    def current_rule(self) -> TrainingRule:
        """The training rule of the current segment."""
        return self.rule

    def train(self, run: "Run", state: TrainState, start: Position, partial_epoch: dict | None) -> TrainState:
        """Trains segment ``start.segment`` from ``start`` (usually ``run.train_segment``)."""
        return run.train_segment(state, start, partial_epoch)

    def next_segment(self, run: "Run", state: TrainState, segment: int) -> TrainState:
        """The state segment ``segment`` (>= 1) starts from (IMP: pruned and rewound)."""
        raise NotImplementedError(f"{self.name} has {self.segments} segment(s) and no next_segment")

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint_extra(self) -> dict:
        """Arrays a checkpoint stores besides the training state (e.g. IMP's rewind point)."""
        return {}

    def checkpoint_info(self) -> dict:
        """JSON a checkpoint stores besides the run's entries."""
        return {}

    def checkpoint_like(self, state: TrainState, meta: dict) -> dict:
        """The structure of the extras a checkpoint with ``meta`` holds."""
        return {}

    def restore(self, run: "Run", state: TrainState, extra: dict, meta: dict) -> None:
        """Takes back what ``checkpoint_extra`` / ``checkpoint_info`` saved."""

    # -- what it records ----------------------------------------------------------------------------
    def segment_label(self, segment: int) -> dict:
        """What metrics lines and progress bars of a segment carry ({"round": k} when there are several)."""
        return {"round": segment} if self.segments > 1 else {}

    def entry(self, run: "Run", state: TrainState, segment: int) -> dict:
        """The finished segment's results entry, less the evaluation ``Run`` adds. A plan of several
        segments names each entry's segment "round" (how results, tables and resumption find it)."""
        return {**self.segment_label(segment), "sparsity": run.trainer.sparsity(state, self.current_rule()),
                "epochs": self.config.epochs}

    def entry_label(self, entry: dict) -> str:
        """How tables name one entry: its round, its level (its sparsity target), else the plan's name."""
        return entry_label(entry, self.name)

    def ticket_path(self, run: "Run", segment: int) -> str | None:
        """Where segment ``segment``'s ticket goes (None: no ticket, and no cost pass)."""
        return round_path(run.workdir, segment) if self.segments > 1 else os.path.join(run.workdir, TICKET_FILE)

    def results_fields(self) -> dict:
        """What results.json says of the method besides its entries."""
        return {}

    # -- a run made of runs of their own --------------------------------------------------------------
    def parts(self) -> list[tuple[str, "Plan"]]:
        """(subdirectory, plan) of each run of its own this run is made of, in order, instead of segments
        trained here (an edge-popup sweep: one per level). ``Run`` executes each in WORKDIR/subdirectory
        (resuming it, or reading it back when finished) with one trainer for all; the run's entries are
        theirs, in this order. Empty (the default): the run trains its own segments."""
        return []

    def after_parts(self, run: "Run") -> None:
        """What a run made of parts does once they are all done, with its workdir released, before its
        final results.json (an edge-popup sweep: its dense baseline)."""

    def figures(self, run: "Run", results: dict) -> None:
        """The figures of the results so far (called only when the caller wants plots)."""
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"),
                              group_key="round" if self.segments > 1 else None, title=self.label)


class Run:
    """Executes a Plan in ``workdir``; rerunning the same run resumes it or returns its results."""

    def __init__(self, plan: Plan, config: TrainConfig, workdir: str, *, trainer: Trainer | None = None,
                 outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()):
        self.plan, self.config, self.workdir = plan, config, workdir
        self.trainer, self.outputs, self.hooks = trainer, outputs, hooks
        self.optimizer: optax.GradientTransformation | None = None  # the plan's (None: the trainer's)
        self.learning_rate: optax.Schedule | None = None  # its learning rate (None: the TrainConfig's)
        self.state: TrainState | None = None  # the last segment's state once trained
        self.entries: list[dict] = []
        self.metrics_path = os.path.join(workdir, METRICS)
        self.checkpoints: RunCheckpoints | None = None
        self._current: tuple[str, dict] = ("prepare", {})
        self._figures_drawn_at, self._figures_due = time.monotonic(), False

    @property
    def dataset(self):
        return self.trainer.dataset

    @property
    def model(self):
        return self.trainer.model

    def execute(self) -> dict:
        plan = self.plan
        parts = plan.parts()
        if parts:
            return self._execute_parts(parts)
        done = finished_run(self.workdir, plan)
        if done is not None:
            what = done["runs"][0].get("label", plan.label) if plan.segments == 1 else plan.label
            log(f"{what}: already complete in {self.workdir}")
            return done
        if self.trainer is None:
            self.trainer = build_trainer(self.config)  # first: missing data leaves no empty workdir
        claim_workdir(self.workdir, plan.signature, plan.record())
        self.optimizer = plan.optimizer(self.trainer)
        self.learning_rate = plan.learning_rate(self.trainer)
        self.trainer.count_synops = self.outputs.cost_report  # SynOps per epoch in metrics.jsonl / TensorBoard
        try:
            self._phase("prepare")
            state = plan.setup(self)
            self.checkpoints = RunCheckpoints(self.trainer, self.workdir, plan.signature, self._around_save)
            start, partial = Position(), None
            resumed = self.checkpoints.restore(state, lambda meta: plan.checkpoint_like(state, meta))
            if resumed is not None:
                state, extra, start, meta = resumed
                self.entries, partial = meta.get("runs", []), meta.get("partial_epoch")
                plan.restore(self, state, extra, meta)
                where = f": round {start.segment}, " if plan.segments > 1 else " at "
                log(f"resuming from {self.checkpoints.directory}{where}{describe(start, self.config.epochs)}")
            drop_metrics_after(self.metrics_path,
                               lambda r: (r.get("round", 0), r["epoch"]) <= (start.segment, start.epoch))

            results = None
            for segment in range(start.segment, plan.segments):
                here = start if segment == start.segment else Position(segment)
                self._phase("train", segment=segment, epoch=here.epoch, batch=here.batch)
                state = plan.train(self, state, here, partial if here == start else None)
                self.state = state
                results = self._finish_segment(state, segment)
                if segment + 1 < plan.segments:
                    self._phase("prune", segment=segment + 1)
                    state = plan.next_segment(self, state, segment + 1)
                    self.checkpoints.save(Position(segment + 1), state, plan.checkpoint_extra(), self._info())
            if results is None:
                return self._write_results()
            if self._figures_due:
                self._draw(results)
            return results
        finally:
            try:
                if self.checkpoints is not None:
                    self.checkpoints.wait()  # the round's checkpoint after pruning may still be writing
            finally:
                release_workdir(self.workdir)

    def _execute_parts(self, parts: list[tuple[str, Plan]]) -> dict:
        """Each part a Run of its own in its subdirectory; the trainer is built and WORKDIR claimed (its
        signature and record: the parent plan's) only when a part is left to run, and released before
        ``plan.after_parts``. results.json holds the entries so far after each part, and at the end the
        plan's fields too (no signature: each part's results.json carries its own, and says when it is
        complete)."""
        plan, claimed = self.plan, False
        try:
            for directory, part in parts:
                where = os.path.join(self.workdir, directory)
                if not claimed and finished_run(where, part) is None:
                    if self.trainer is None:
                        self.trainer = build_trainer(self.config)  # first: missing data leaves no empty workdir
                    claim_workdir(self.workdir, plan.signature, plan.record())
                    claimed = True
                done = Run(part, self.config, where, trainer=self.trainer, outputs=self.outputs,
                           hooks=self.hooks).execute()
                self.entries += done["runs"]
                write_json(os.path.join(self.workdir, RESULTS),
                           {"method": plan.name, "label": plan.label, "runs": self.entries})
        finally:
            release_workdir(self.workdir)
        plan.after_parts(self)
        return self._record({"method": plan.name, "label": plan.label, **plan.results_fields(),
                             "runs": self.entries})

    def new_state(self, variables: Variables, scores, rule: TrainingRule) -> TrainState:
        """The first state under ``rule`` at the config's seed, stepping with the plan's optimizer."""
        return self.trainer.new_state(variables, scores, rule, self.config.seed, self.optimizer)

    def fresh_optimizer(self, state: TrainState, rule: TrainingRule, seed: int) -> TrainState:
        """``state`` with the plan's optimizer started afresh (a new IMP round)."""
        return self.trainer.fresh_optimizer(state, rule, seed, self.optimizer)

    def train_segment(self, state: TrainState, start: Position, partial_epoch: dict | None = None,
                      on_epoch_end=None) -> TrainState:
        """The plan's usual ``train``: the trainer's epochs, checkpointed, with the run's hooks."""
        segment, hooks = start.segment, self.hooks

        def epoch_end(state, done):
            hooks.phase("epoch_end", segment=segment, epoch=done)
            stop = on_epoch_end(state, done) if on_epoch_end else None
            self._phase("train", segment=segment, epoch=done, batch=0)
            return stop

        return train_segment(self.trainer, self.checkpoints, state, self.plan.current_rule(), start, self.optimizer,
                             partial_epoch=partial_epoch, extra=self.plan.checkpoint_extra, info=self._info,
                             label=self.plan.segment_label(segment) or None, metrics_path=self.metrics_path,
                             on_epoch_end=epoch_end, learning_rate=self.learning_rate,
                             on_batch=(lambda epoch, batch: hooks.phase("batch", segment=segment, epoch=epoch,
                                                                         batch=batch))
                             if hooks.wants_batches else None)

    def _phase(self, name: str, **where) -> None:
        self._current = (name, where)
        if name in RELEASE_ENTERING:
            release_free_memory()
        self.hooks.phase(name, **where)

    def _around_save(self, before: bool, position: Position) -> None:
        """A checkpoint write is a phase of its own inside training or pruning, which then goes on."""
        if before:
            self.hooks.phase("checkpoint", segment=position.segment, epoch=position.epoch, batch=position.batch)
        else:
            self.hooks.phase(self._current[0], **self._current[1])

    def _info(self) -> dict:
        return {"runs": self.entries, **self.plan.checkpoint_info()}

    def _finish_segment(self, state: TrainState, segment: int) -> dict:
        plan, rule = self.plan, self.plan.current_rule()
        self._phase("evaluate", segment=segment)
        entry = {**plan.entry(self, state, segment), **self.trainer.evaluate(state, rule)}
        entry = {**entry, "label": plan.entry_label(entry), "method_label": plan.label}
        path = plan.ticket_path(self, segment)
        if path is not None:
            self._phase("ticket", segment=segment)
            write_ticket(path, self.config, self.dataset.num_classes, state, rule, entry)
        if self.outputs.cost_report and path is not None:
            self._phase("cost_report", segment=segment)
            entry["efficiency"] = ticket_cost(self.config, self.dataset.num_classes, state, rule, self.dataset)
        self.entries = [e for e in self.entries if _segment_of(e) != segment] + [entry]
        results = self._write_results(final=segment + 1 == plan.segments)
        log(f"{entry['label']}: sparsity {entry['sparsity']:.4f} test accuracy {entry['test_accuracy']:.4f}")
        return results

    def _write_results(self, final: bool = True) -> dict:
        plan = self.plan
        return self._record({"method": plan.name, "label": plan.label, **plan.results_fields(),
                             "runs": sorted(self.entries, key=_segment_of), "signature": plan.signature}, final)

    def _record(self, results: dict, final: bool = True) -> dict:
        """Writes results.json and draws the plan's figures (when the caller wants plots): at the run's end
        (``final``), or when the last drawing is FIGURE_INTERVAL_S old; else they are due at the end."""
        self._phase("results")
        write_json(os.path.join(self.workdir, RESULTS), results)
        if self.outputs.plots:
            if final or time.monotonic() - self._figures_drawn_at >= FIGURE_INTERVAL_S:
                self._draw(results)
            else:
                self._figures_due = True
        return results

    def _draw(self, results: dict) -> None:
        self._phase("plots")
        self.plan.figures(self, results)
        self._figures_drawn_at, self._figures_due = time.monotonic(), False

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)


def finished_run(workdir: str, plan: Plan) -> dict | None:
    """WORKDIR's results.json when ``plan``'s run finished there (every segment); None when it has not (yet);
    a RunMismatchError when a run with other settings wrote it."""
    done = finished_results(workdir, plan.signature)
    return done if done is not None and len(done.get("runs", ())) >= plan.segments else None


def _segment_of(entry: dict) -> int:
    return entry.get("round", 0)  # one-segment runs have no round
