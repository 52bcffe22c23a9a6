"""Lottery-ticket controls, early-bird tickets and criteria as plug-ins.

Pure pieces against NumPy and hand-made masks; the plug-ins and the controls
through IMP on a small digits setup (256 train images, T = 2, 3 epochs a round).
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jsnn.runs.imp as imp
from jsnn import data as jdata
from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.runs import controls, results
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Run
from jsnn.runs.tickets import rewind_path, round_path
from jsnn.sparsity import criteria
from jsnn.sparsity import masks as M
from jsnn.sparsity.early_bird import EarlyBirdRule, mask_distance
from jsnn.sparsity.stats import collect_gradients
from jsnn.ticket import load_ticket
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import apply_model, by_name, from_names, init_variables, kernels, named_kernels
from tests.outcomes import crash_after_checkpoint, run_outcome, untimed
from tests.small_data import digits_subset


def t(d):
    return from_names({n: jnp.asarray(v) for n, v in d.items()})


# ----------------------------------------------------------------------------- early-bird, by hand


def test_mask_distance_is_the_numpy_hamming_distance():
    a = {"c": np.array([[1, 0, 1], [1, 1, 0]], np.float32), "f": np.array([1, 1, 0, 0], np.float32)}
    b = {"c": np.array([[1, 1, 1], [0, 1, 0]], np.float32), "f": np.array([1, 1, 0, 1], np.float32)}
    # by hand: c differs at (0,1) and (1,0), f at 3: 3 of 10 entries
    assert mask_distance(t(a), t(b)) == pytest.approx(3 / 10)
    flat = lambda d: np.concatenate([d[n].reshape(-1) for n in sorted(d)])
    assert mask_distance(t(a), t(b)) == pytest.approx(np.mean(flat(a) != flat(b)))
    # over the live weights only: f's entries 2, 3 were pruned before (live 0) -> 2 of 8 differ
    live = {"c": np.ones((2, 3), np.float32), "f": np.array([1, 1, 0, 0], np.float32)}
    assert mask_distance(t(a), t(b), t(live)) == pytest.approx(2 / 8)
    assert mask_distance(t(a), t(a)) == 0.0


def test_early_bird_stops_once_the_window_agrees_within_the_threshold():
    """Masks of 20 entries; each step below flips a number of entries of the previous one."""
    rng = np.random.default_rng(0)
    base = (rng.random(20) > 0.5).astype(np.float32)

    def flip(m, idx):
        m = m.copy()
        m[list(idx)] = 1 - m[list(idx)]
        return m

    seq = [base]
    for idx in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12], [13], [], [14], []):
        seq.append(flip(seq[-1], idx))
    rule = EarlyBirdRule(window=5, threshold=0.1)
    fired = [rule.update({"x": {"kernel": m}}) for m in seq]
    # distance of the newest to each earlier mask in the window of 5, in NumPy
    for i in range(len(seq)):
        window = seq[max(0, i - 4):i + 1]
        ref = [np.mean(window[-1] != w) for w in window[:-1]]
        expected = len(window) == 5 and max(ref) < 0.1
        assert fired[i] == expected, (i, ref)
    # by hand: at step 6 the window is masks 2..6, distances to mask 6: 3+1+0+1=5, 1+0+1=2, 1, 1 of 20
    # (0.25 >= 0.1); at step 7, masks 3..7: 1+0+1+0=2 -> 0.1, not below; never fires in this sequence.
    assert not any(fired)
    more = seq + [seq[-1], seq[-1], seq[-1]]
    rule = EarlyBirdRule(window=5, threshold=0.1)
    fired, distances = [], []
    for m in more:
        fired.append(rule.update({"x": {"kernel": m}}))
        distances.append(list(rule.distances))
    # step 8: window 4..8, distances of the newest to masks 4..7: 1/20, 1/20, 0, 0 -> fires (first time)
    assert fired.index(True) == 8 and distances[8] == pytest.approx([1 / 20, 1 / 20, 0, 0])
    assert distances[7] == pytest.approx([2 / 20, 1 / 20, 1 / 20, 0])  # 0.1 is not below 0.1
    with pytest.raises(ValueError):
        EarlyBirdRule(window=1)


# ----------------------------------------------------------------------------- controls, pure


def test_random_masks_keep_every_layers_count_exactly():
    rng = np.random.default_rng(2)
    ticket = {"a": (rng.random((3, 3, 4, 8)) < 0.2).astype(np.float32),
              "b": (rng.random((32, 10)) < 0.05).astype(np.float32),
              "c": np.zeros((5, 2), np.float32)}
    ticket["c"][0, 0] = 1
    r1 = by_name(controls.random_masks(t(ticket), jax.random.key(0)))
    r2 = by_name(controls.random_masks(t(ticket), jax.random.key(1)))
    for n, m in ticket.items():
        assert int(np.asarray(r1[n]).sum()) == int(m.sum()) and r1[n].shape == m.shape, n
        assert set(np.unique(np.asarray(r1[n]))) <= {0.0, 1.0}
    assert not np.array_equal(np.asarray(r1["a"]), ticket["a"])  # not the ticket's mask
    assert not np.array_equal(np.asarray(r1["a"]), np.asarray(r2["a"]))  # a different draw per key


# ----------------------------------------------------------------------------- through IMP


@pytest.fixture(scope="module")
def setup():
    ds = digits_subset(256, 128)
    config = TrainConfig(timesteps=2, epochs=3, batch_size=64, progress=False).resolve("imp")
    model = build_model(config, ds.num_classes)
    return ds, config, model, Trainer(config, model, ds)


def test_reinit_keeps_the_mask_and_changes_every_surviving_weight(setup):
    ds, config, model, _ = setup
    ticket = init_variables(model, jax.random.key(config.seed), (1,) + ds.image_shape)
    rng = np.random.default_rng(3)
    masks = t({n: (rng.random(k.shape) < 0.3).astype(np.float32) for n, k in named_kernels(ticket.weights).items()})
    fresh = controls.reinit_variables(model, (1,) + ds.image_shape, masks, config.seed)
    for n, m in by_name(fresh.masks).items():
        np.testing.assert_array_equal(np.asarray(m), np.asarray(by_name(masks)[n]))
    for n, w in named_kernels(fresh.weights).items():
        keep = np.asarray(by_name(masks)[n]) > 0
        w, old = np.asarray(w), np.asarray(named_kernels(ticket.weights)[n])
        assert np.all(w[~keep] == 0), n
        assert np.all(w[keep] != old[keep]), n  # every survivor drawn afresh
        assert np.all(w[keep] != 0), n


def test_snip_gradients_equal_a_direct_gradient_over_the_same_images(setup):
    ds, config, model, trainer = setup
    rule = MaskedTraining()
    v = init_variables(model, jax.random.key(0), (1,) + ds.image_shape)
    state = trainer.new_state(v, {}, rule, 0)
    got = collect_gradients(trainer, state, rule, num_batches=2, seed=5)
    # the same two batches, one gradient of the mean of their losses, written out here
    batches = list(jdata.train_batches(ds.train_images, ds.train_labels, config.batch_size, 5, epoch=0))[:2]

    def loss(weights):
        total = 0.0
        for images, labels in batches:
            x = jdata.normalize(images.astype(np.float32), ds.mean, ds.std)
            logits, _, _ = apply_model(model, v._replace(weights=weights), x, train=False)
            total += optax.softmax_cross_entropy_with_integer_labels(logits, labels[None, :]).mean()
        return total / 2

    ref = kernels(jax.grad(loss)(v.weights))
    for n, g in by_name(got).items():
        np.testing.assert_allclose(np.asarray(g), np.asarray(by_name(ref)[n]), rtol=2e-4, atol=1e-7, err_msg=n)
    scores = criteria.scores("snip", v.weights, {"gradients": got})
    for n, s in by_name(scores).items():
        np.testing.assert_allclose(np.asarray(s), np.abs(np.asarray(named_kernels(v.weights)[n] * by_name(got)[n])),
                                   rtol=1e-6)


@pytest.fixture
def registered():
    """A criterion registered by a test: prefers the weights with the smallest |w| (anti-magnitude), and
    declares the BN variables it does not use, to see that exactly its needs are gathered."""
    seen = []

    @criteria.register_criterion("test_smallest", needs=("bn_variables", "key"))
    def smallest(weights, bn_variables, key, **rest):
        seen.append(sorted(["bn_variables", "key", *rest]))
        return jax.tree.map(lambda w: -jnp.abs(w), kernels(weights))

    yield seen
    criteria.CRITERIA.pop("test_smallest")


def quiet_run(config, options, workdir, trainer, hooks=RunHooks()):
    """An IMP run without figures (not under test here)."""
    return Run(imp.IMPPlan(config, options), config, str(workdir), trainer=trainer, outputs=Outputs(plots=False),
               hooks=hooks)


def test_a_registered_criterion_runs_through_imp_unchanged(setup, tmp_path, registered):
    ds, config, model, trainer = setup
    options = imp.IMPOptions(rounds=2, rewind_epoch=1, criterion="test_smallest").resolve(config)
    assert options.scope == "global" and imp.imp_label(options) == "IMP (test_smallest)"
    result = quiet_run(config, options, tmp_path, trainer).execute()
    assert result["label"] == "IMP (test_smallest)"
    assert [r["round"] for r in result["runs"]] == [0, 1]
    assert registered == [["bn_variables", "key"]]  # called once (one pruning), with exactly its inputs
    # the round-1 ticket keeps the 75% of weights with the smallest |w| after round 0, in NumPy
    trained = load_ticket(round_path(str(tmp_path), 0)).variables.weights
    masks = load_ticket(round_path(str(tmp_path), 1)).variables.masks
    mags = np.concatenate([np.abs(np.asarray(k)).reshape(-1) for k in named_kernels(trained).values()])
    kept = M.count_kept(masks)[0]
    assert kept == round(mags.size * 0.75)
    cut = np.sort(mags)[kept - 1]
    for n, m in by_name(masks).items():
        np.testing.assert_array_equal(np.asarray(m), (np.abs(np.asarray(named_kernels(trained)[n])) <= cut))


def _masks(workdir, k):
    return {n: np.asarray(m) for n, m in by_name(load_ticket(round_path(str(workdir), k)).variables.masks).items()}


@pytest.fixture(scope="module")
def ticket_run(setup, tmp_path_factory):
    ds, config, model, trainer = setup
    workdir = tmp_path_factory.mktemp("ticket")
    options = imp.IMPOptions(rounds=3, rewind_epoch=1).resolve(config)
    result = quiet_run(config, options, workdir, trainer).execute()
    return workdir, options, result


@pytest.mark.parametrize("control", ["reinit", "random"])
def test_controls_follow_the_ticket_round_by_round(setup, ticket_run, tmp_path, monkeypatch, control):
    ds, config, model, trainer = setup
    ticket_dir, options, ticket = ticket_run
    options = dataclasses.replace(options, control=control, ticket_dir=str(ticket_dir))
    run = quiet_run(config, options, tmp_path, trainer)
    starts = {}
    original = run.plan.next_segment

    def spy(run_, state, k):  # the state each control round starts from
        out = original(run_, state, k)
        starts[k] = jax.tree.map(np.array, out)
        return out

    monkeypatch.setattr(run.plan, "next_segment", spy)
    result = run.execute()
    assert result["control"] == control and result["ticket_dir"] == str(ticket_dir)
    assert [r["sparsity"] for r in result["runs"]] == pytest.approx([1 - 0.75 ** k for k in range(3)], abs=1e-4)
    # round 0 is the ticket run's dense network, taken rather than retrained
    assert result["runs"][0]["test_accuracy"] == ticket["runs"][0]["test_accuracy"]
    assert not any(r["round"] == 0 for r in _records(tmp_path))
    # --compare overlays the control on its ticket, dashed
    drawn = {}
    monkeypatch.setattr(results.plots, "accuracy_vs_sparsity",
                        lambda curves, path, **k: drawn.update(curves=curves, **k))
    results.compare_plot([str(ticket_dir), str(tmp_path)], str(tmp_path / "compare.png"))
    label = {"reinit": "IMP (magnitude), reinit", "random": "IMP (magnitude), random mask"}[control]
    assert list(drawn["curves"]) == ["IMP (magnitude)", label] and drawn["dashed"] == [label]
    rewind = load_ticket(rewind_path(str(ticket_dir))).variables
    for k in (1, 2):
        ticket_masks, state = _masks(ticket_dir, k), starts[k]
        control_masks = by_name(state.masks)
        for n, m in ticket_masks.items():
            got = np.asarray(control_masks[n])
            assert int(got.sum()) == int(m.sum()), (k, n)  # the ticket's per-layer count, exactly
            w = np.asarray(named_kernels(state.weights)[n])
            keep = got > 0
            assert np.all(w[~keep] == 0), (k, n)
            if control == "reinit":  # the ticket's mask, every survivor drawn afresh
                np.testing.assert_array_equal(got, m)
                assert np.all(w[keep] != np.asarray(named_kernels(rewind.weights)[n])[keep]), (k, n)
            else:  # another mask, on the ticket's rewind point
                assert not np.array_equal(got, m), (k, n)
                np.testing.assert_array_equal(w[keep], np.asarray(named_kernels(rewind.weights)[n])[keep])
        assert int(state.step) == 0


def test_control_without_its_ticket_round_says_so(setup, ticket_run, tmp_path):
    ds, config, model, trainer = setup
    ticket_dir, options, _ = ticket_run
    options = dataclasses.replace(options, rounds=4, control="reinit", ticket_dir=str(ticket_dir))
    with pytest.raises(FileNotFoundError, match="has no round 3"):
        quiet_run(config, options, tmp_path, trainer).execute()
    with pytest.raises(ValueError, match="--control must be one of"):
        imp.IMPOptions(control="bogus").resolve(config)
    with pytest.raises(ValueError, match="early-bird"):
        imp.IMPOptions(control="random", early_bird=True).resolve(config)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_early_bird_ends_rounds_where_the_rule_fires_and_resumes_there(setup, tmp_path):
    """Window 2, threshold 0.99: the rule fires at the second mask it sees; rewinding to initialisation,
    rounds 0 and 1 stop after epoch 2 of 3 and draw their ticket there, the last round runs all 3."""
    ds, config, model, trainer = setup
    options = imp.IMPOptions(rounds=3, rewind_epoch=0, early_bird=True, early_bird_window=2,
                             early_bird_threshold=0.99).resolve(config)
    whole = quiet_run(config, options, tmp_path / "whole", trainer).execute()
    assert [r.get("epochs_run") for r in whole["runs"]] == [2, 2, None]
    assert [r.get("early_bird_stopped") for r in whole["runs"]] == [True, True, None]
    per_round = [sum(1 for r in _records(tmp_path / "whole") if r["round"] == k) for k in range(3)]
    assert per_round == [2, 2, 3]
    # the round-1 ticket is global magnitude pruning of the round-0 weights at the early stop, in NumPy
    trained = named_kernels(load_ticket(round_path(str(tmp_path / "whole"), 0)).variables.weights)
    mags = np.concatenate([np.abs(np.asarray(k)).reshape(-1) for k in trained.values()])
    kept = round(mags.size * 0.75)
    cut = np.sort(mags)[::-1][kept - 1]
    for n, m in _masks(tmp_path / "whole", 1).items():
        np.testing.assert_array_equal(m, (np.abs(np.asarray(trained[n])) >= cut).astype(m.dtype), err_msg=n)

    # killed right after the early stop's checkpoint of round 1: the rerun does not train round 1 further
    with pytest.raises(KeyboardInterrupt):
        quiet_run(config, options, tmp_path / "cut", trainer,
                  hooks=crash_after_checkpoint(segment=1, epoch=2)).execute()
    resumed = quiet_run(config, options, tmp_path / "cut", trainer).execute()
    # every result entry (less timings) and every ticket's arrays, both ways
    results, tickets = run_outcome(str(tmp_path / "cut"), "tickets/*.npz")
    reference, reference_tickets = run_outcome(str(tmp_path / "whole"), "tickets/*.npz")
    assert results == reference == untimed(whole["runs"]) == untimed(resumed["runs"])
    assert tickets == reference_tickets and len(tickets) == 4  # rewind point and rounds 0-2
    assert [sum(1 for r in _records(tmp_path / "cut") if r["round"] == k) for k in range(3)] == [2, 2, 3]
