"""SIGTERM at any phase of an IMP run after start-up (inside and between epochs, evaluation, the
ticket, the cost report, results, plots, pruning) either lets the run finish or stops it with
``Preempted`` (one line), and the rerun in the same workdir ends with the results and tickets of an
uninterrupted run.

The signal is sent from the run's own hooks (``RunHooks(on_phase=...)``, jsnn/runs/outputs.py) as
the run enters the phase, so each case hits its phase deterministically. Every phase the runs
declare (``outputs.PHASES``) is covered: a phase added there without a case here fails
``test_every_phase_is_signalled``. One in-process trainer serves every run, so each step compiles
once.
"""
import os
import signal

import pytest

from jsnn import preemption
from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.runs import imp
from jsnn.runs.outputs import PHASES, RunHooks
from jsnn.trainer import Trainer
from tests.outcomes import run_outcome
from tests.small_data import EVERY_CHECKPOINT, digits_subset

ROUNDS = 2

# (phase, where it must stand or None for the first time the phase is entered, a name for the case);
# ``segment`` is the IMP round, batch events count epochs from 0 (the trainer's index)
CASES = [
    ("prepare", None, "prepare"),
    ("train", {"segment": 0}, "train_round_0"),
    ("batch", {"segment": 0, "epoch": 1, "batch": 3}, "inside_epoch_2_round_0"),
    ("batch", {"segment": 1, "epoch": 0, "batch": 7}, "inside_epoch_1_round_1"),
    ("epoch_end", {"segment": 0, "epoch": 1}, "between_epochs_round_0"),
    ("epoch_end", {"segment": 1, "epoch": 2}, "last_epoch_end"),
    ("checkpoint", {"segment": 0, "epoch": 1, "batch": 0}, "checkpoint_after_epoch_1"),
    ("checkpoint", {"segment": 1, "epoch": 0, "batch": 0}, "checkpoint_after_prune"),
    ("evaluate", {"segment": 0}, "evaluate_round_0"),
    ("ticket", {"segment": 0}, "ticket_round_0"),
    ("cost_report", {"segment": 0}, "cost_report_round_0"),
    ("results", None, "results_round_0"),
    ("plots", None, "plots_at_the_end"),  # a round of seconds is not drawn: the run's end draws (FIGURE_INTERVAL_S)
    ("prune", {"segment": 1}, "prune_to_round_1"),
    ("train", {"segment": 1}, "train_round_1"),
    ("evaluate", {"segment": 1}, "evaluate_last_round"),
]
# these stop inside training: the run must raise Preempted (the others may finish)
MUST_STOP = {"inside_epoch_2_round_0", "inside_epoch_1_round_1", "between_epochs_round_0", "prepare",
             "train_round_0", "evaluate_round_0", "ticket_round_0", "cost_report_round_0", "results_round_0",
             "prune_to_round_1", "train_round_1", "checkpoint_after_epoch_1",
             "checkpoint_after_prune"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """IMP on 320 digits (batch 32: 10 steps per epoch), width 0.25, T = 2, 2 epochs, 2 rounds, and
    the uninterrupted run's results and tickets."""
    ds = digits_subset(320, 64)
    config = TrainConfig(dataset="digits", epochs=2, timesteps=2, width=0.25, batch_size=32,
                         progress=False, **EVERY_CHECKPOINT).resolve("imp")
    trainer = Trainer(config, build_model(config, ds.num_classes), ds)
    options = imp.IMPOptions(rounds=ROUNDS).resolve(config)
    reference_dir = str(tmp_path_factory.mktemp("reference"))
    seen = []
    imp.run(config, options, reference_dir, trainer=trainer, hooks=RunHooks(lambda n, w: seen.append((n, w))))
    return config, options, trainer, outcome(reference_dir), seen


def outcome(workdir):
    """results.json's entries less timings, and every ticket's arrays as bytes."""
    return run_outcome(workdir, "tickets/*.npz")


@pytest.fixture(autouse=True)
def no_stale_stop_request():
    preemption.clear()
    yield
    preemption.clear()


def at(reported: dict, where: dict | None) -> bool:
    """Whether a phase reported at ``reported`` is the moment ``where`` names (None: any)."""
    return where is None or all(reported.get(k) == v for k, v in where.items())


def test_every_phase_is_signalled(setup):
    *_, seen = setup
    assert {phase for phase, _, _ in CASES} == set(PHASES)
    for phase, where, name in CASES:  # every case's moment happens in an uninterrupted run
        assert any(n == phase and at(w, where) for n, w in seen), name


@pytest.mark.parametrize("phase,where,name", CASES, ids=[c[2] for c in CASES])
def test_sigterm_at_phase_then_rerun_equals_uninterrupted(setup, tmp_path, phase, where, name):
    config, options, trainer, reference, _ = setup
    workdir = str(tmp_path / "w")
    sent = []

    def on_phase(n, w):
        if not sent and n == phase and at(w, where):
            sent.append((n, w))
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = None
    with preemption.stop_on_signals():
        try:
            imp.run(config, options, workdir, trainer=trainer, hooks=RunHooks(on_phase))
        except preemption.Preempted as e:
            stopped = str(e)
    assert sent, f"{name}: the run never entered that phase"
    if name in MUST_STOP:
        assert stopped is not None, f"{name}: SIGTERM with training left did not stop the run"
    if stopped is not None:
        assert stopped.startswith("stopped by SIGTERM after ") and "\n" not in stopped
        assert "rerun the same command" in stopped

    preemption.clear()
    rerun_phases = []
    imp.run(config, options, workdir, trainer=trainer, hooks=RunHooks(lambda n, w: rerun_phases.append(n)))
    results, tickets = outcome(workdir)
    assert results == reference[0]
    assert tickets.keys() == reference[1].keys()
    for k in tickets:
        assert tickets[k] == reference[1][k], k
    if stopped is None:  # the run finished: the rerun only reads its results
        assert "batch" not in rerun_phases


def test_figures_are_drawn_at_the_end_and_after_a_round_only_when_the_last_drawing_is_old(setup, tmp_path,
                                                                                          monkeypatch):
    """A run's rounds of seconds are not drawn each time over: one drawing, at the end, after the last
    round's results. A round ending when the last drawing is FIGURE_INTERVAL_S old is drawn (a real run's
    rounds: every one), and the end draws again."""
    from jsnn.runs import run as run_module

    config, options, trainer, _, seen = setup
    phases = [(n, w.get("segment")) for n, w in seen if n in ("evaluate", "plots")]
    assert phases == [("evaluate", 0), ("evaluate", 1), ("plots", None)]
    monkeypatch.setattr(run_module, "FIGURE_INTERVAL_S", 0.0)
    again = []
    imp.run(config, options, str(tmp_path / "w"), trainer=trainer, hooks=RunHooks(lambda n, w: again.append(n)))
    assert [n for n in again if n in ("evaluate", "plots")] == ["evaluate", "plots", "evaluate", "plots"]
    assert os.path.exists(tmp_path / "w" / "accuracy_vs_sparsity.png")
