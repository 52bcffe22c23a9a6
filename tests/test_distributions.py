"""Sparsity distributions (jsnn/sparsity/distributions.py) against hand computations and NumPy rankings."""
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.sparsity import distributions as D
from jsnn.sparsity import masks as M
from jsnn.variables import by_name, from_names

# a small network: 3x3 conv 1->4, 3x3 conv 4->8, linear 32->10 (644 weights)
SHAPES = {"conv0": (3, 3, 1, 4), "conv1": (3, 3, 4, 8), "fc": (32, 10)}
SIZES = {n: int(np.prod(s)) for n, s in SHAPES.items()}  # 36, 288, 320


def test_erk_densities_by_hand_without_dense_layers():
    """Raw ERK densities: (sum of dims) / (product): conv0 11/36, conv1 18/288, fc 42/320. Then
    eps * sum_l (sum of dims_l) = density * 644, i.e. eps = 0.3 * 644 / (11 + 18 + 42) = 193.2 / 71,
    and no layer passes density 1 (conv0: 193.2/71 * 11/36 = 0.831)."""
    got = D.erk_densities(SHAPES, 0.3)
    eps = 193.2 / 71
    assert got == pytest.approx({"conv0": eps * 11 / 36, "conv1": eps * 18 / 288, "fc": eps * 42 / 320})
    assert sum(got[n] * SIZES[n] for n in SHAPES) == pytest.approx(0.3 * 644)


def test_erk_makes_a_layer_dense_and_rescales_the_others_by_hand():
    """At density 0.5: eps = 322 / 71, conv0 would get 322/71 * 11/36 = 1.39 > 1, so conv0 is dense
    (36 weights) and the other two share 322 - 36 = 286: eps = 286 / (18 + 42)."""
    got = D.erk_densities(SHAPES, 0.5)
    eps = 286 / 60
    assert got == pytest.approx({"conv0": 1.0, "conv1": eps * 18 / 288, "fc": eps * 42 / 320})
    assert sum(got[n] * SIZES[n] for n in SHAPES) == pytest.approx(0.5 * 644)


def test_erk_layers_kept_dense_by_request_are_left_out():
    got = D.erk_densities(SHAPES, 0.2, dense=("fc",))
    eps = 0.2 * (36 + 288) / (11 + 18)
    assert got == pytest.approx({"conv0": eps * 11 / 36, "conv1": eps * 18 / 288, "fc": 1.0})


def test_layer_targets_uniform_and_erk_and_scored_ones_refused():
    assert D.layer_targets("uniform", SHAPES, 0.9, dense=("conv0",)) == pytest.approx(
        {"conv0": 0.0, "conv1": 0.9, "fc": 0.9})
    erk = D.layer_targets("erk", SHAPES, 0.7)
    assert erk == pytest.approx({n: 1 - d for n, d in D.erk_densities(SHAPES, 0.3).items()})
    for name in ("global", "matched"):
        with pytest.raises(ValueError, match="needs scores"):
            D.layer_targets(name, SHAPES, 0.5)
    with pytest.raises(ValueError, match="unknown sparsity distribution"):
        D.get_distribution("nope")


def _trees(rng):
    scores = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    return scores, {n: np.ones(s, np.float32) for n, s in SHAPES.items()}


@pytest.mark.parametrize("density", [0.5, 0.3, 0.05])
def test_prune_counts_per_distribution(density):
    rng = np.random.default_rng(0)
    scores, ones = _trees(rng)
    magnitudes = {n: np.abs(rng.normal(size=s)).astype(np.float32) for n, s in SHAPES.items()}
    t = lambda d: from_names({n: jnp.asarray(v) for n, v in d.items()})

    def kept(name):
        new = by_name(D.prune(name, t(scores), t(ones), density, t(magnitudes)))
        for n, m in new.items():  # within a layer the scores choose: the top-k of that layer, in NumPy
            order = np.argsort(-scores[n].reshape(-1), kind="stable")[:int(np.asarray(m).sum())]
            ref = np.zeros(m.size, np.float32)
            ref[order] = 1
            np.testing.assert_array_equal(np.asarray(m).reshape(-1), ref, err_msg=(name, n))
        return {n: int(np.asarray(m).sum()) for n, m in new.items()}

    assert kept("uniform") == {n: max(1, round(density * SIZES[n])) for n in SHAPES}
    erk = D.erk_densities(SHAPES, density)
    assert kept("erk") == {n: max(1, round(erk[n] * SIZES[n])) for n in SHAPES}
    total = round(644 * density)
    flat = np.concatenate([scores[n].reshape(-1) for n in SHAPES])  # SHAPES is in by_name's sorted order
    cut = np.sort(flat)[::-1][total - 1]
    assert kept("global") == {n: int((scores[n] >= cut).sum()) for n in SHAPES}
    mflat = np.concatenate([magnitudes[n].reshape(-1) for n in SHAPES])
    mcut = np.sort(mflat)[::-1][total - 1]
    assert kept("matched") == {n: int((magnitudes[n] >= mcut).sum()) for n in SHAPES}


def test_prune_never_revives_pruned_weights():
    """A layer asked to keep more than it has live keeps what it has; pruned entries stay 0."""
    rng = np.random.default_rng(1)
    scores, ones = _trees(rng)
    live = dict(ones)
    live["conv0"] = np.zeros(SHAPES["conv0"], np.float32)
    live["conv0"][0, 0, 0, :2] = 1  # 2 live weights; uniform at density 0.5 would ask for 18
    t = lambda d: from_names({n: jnp.asarray(v) for n, v in d.items()})
    new = by_name(D.prune("uniform", t(scores), t(live), 0.5))
    np.testing.assert_array_equal(np.asarray(new["conv0"]), live["conv0"])
    assert M.count_kept(from_names(new))[0] == 2 + 144 + 160


def test_random_criterion_gathers_only_a_key_that_differs_per_round():
    """The random criterion declares one input, a key folded with the round; its scores are i.i.d. U[0, 1)."""
    from jsnn.sparsity import criteria

    weights = {n: {"kernel": jnp.zeros(s)} for n, s in SHAPES.items()}
    calibration = lambda k: criteria.Calibration(trainer=None, state=None, rule=None, batches=1, seed=3,
                                                 round_index=k)
    inputs = criteria.gather_inputs("random", calibration(1))
    assert list(inputs) == ["key"]
    s1 = by_name(criteria.scores("random", weights, inputs))
    s1_again = by_name(criteria.scores("random", weights, criteria.gather_inputs("random", calibration(1))))
    s2 = by_name(criteria.scores("random", weights, criteria.gather_inputs("random", calibration(2))))
    for n, s in s1.items():
        assert s.shape == SHAPES[n] and np.all((np.asarray(s) >= 0) & (np.asarray(s) < 1))
        np.testing.assert_array_equal(np.asarray(s), np.asarray(s1_again[n]))  # reproducible
        assert not np.array_equal(np.asarray(s), np.asarray(s2[n]))  # another round, another draw
    flat = np.concatenate([np.asarray(s).reshape(-1) for s in s1.values()])
    assert abs(flat.mean() - 0.5) < 0.05  # 644 uniform draws


def _per_layer_at_global_counts(scores, live, density):
    """The per-layer prune at the global ranking's counts, capped at each layer's live weights: the path
    every distribution takes, written out."""
    counts = D.get_distribution("global").counts(scores, live, density)
    alive = by_name(M.layer_keep_counts(live))
    return M.prune_per_layer(scores, live, from_names({n: min(int(c), alive[n]) for n, c in counts.items()}))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_masks_taken_directly_equal_the_per_layer_prune_at_its_counts(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    t = lambda d: from_names({n: jnp.asarray(v) for n, v in d.items()})
    scores = t({n: np.round(rng.normal(size=s), 1).astype(np.float32) for n, s in SHAPES.items()})  # many ties
    live = t({n: (rng.random(s) < 0.7).astype(np.float32) for n, s in SHAPES.items()})
    kept_live = M.count_kept(live)[0]
    for density in (0.6, 0.35, 0.1, 0.02, kept_live / 644):
        want = _per_layer_at_global_counts(scores, live, density)
        with monkeypatch.context() as m:  # the ranking's masks serve: the per-layer prune is not run
            m.setattr(M, "prune_per_layer", lambda *a: pytest.fail("the per-layer prune ran"))
            got = D.prune("global", scores, live, density)
        for n in SHAPES:
            np.testing.assert_array_equal(np.asarray(by_name(got)[n]), np.asarray(by_name(want)[n]),
                                          err_msg=str((density, n)))
    # asked to keep more than is live, the ranking would keep pruned weights: the per-layer prune decides
    assert D.global_ranking_masks(scores, live, 0.9) is None
    got = D.prune("global", scores, live, 0.9)
    want = _per_layer_at_global_counts(scores, live, 0.9)
    for n in SHAPES:
        np.testing.assert_array_equal(np.asarray(by_name(got)[n]), np.asarray(by_name(want)[n]))
        assert np.all(np.asarray(by_name(got)[n]) <= np.asarray(by_name(live)[n]))
