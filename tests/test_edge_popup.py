"""Edge-popup (every conv and linear kernel, first and last included, masked to the top (1 - sparsity) of its
|scores|; the scores get the masked weight's gradient through the top-k; the weights never change): frozen
weights, exact per-layer counts, the straight-through score gradient against a hand computation, and a
resumable sweep.

One small digits setup (256 train images, T = 2, batch 64) and one Trainer are
shared by the tests that train, so each edge-popup level compiles once.
"""
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jsnn.runs.edge_popup as eps
from jsnn import data as jdata
from jsnn.layers import BNConfig
from jsnn.models.vgg import SpikingVGG
from jsnn.objective import spike_loss
from jsnn.runs.outputs import Outputs
from jsnn.runs.tickets import level_dir
from jsnn.sparsity.masks import count_kept, keep_count, keep_largest
from jsnn.sparsity.score_masks import init_scores, masks_from_scores, top_k_mask
from jsnn.training_rules import EdgePopup, MaskedTraining, _effective_masks, masks_in_use
from jsnn.variables import apply_model, init_variables, kernels, named_kernels
from tests.outcomes import crash_after_checkpoint, run_outcome, untimed

T = 2


@pytest.fixture(scope="module")
def setup(digits_edge_popup):
    """The session's small digits edge-popup setup (tests/small_data.py): 256 images, T = 2, batch 64, 2 epochs."""
    ds, config, model, trainer = digits_edge_popup
    assert config.timesteps == T and config.bn_affine is False  # non-affine BN: nothing but the scores is learned
    return ds, config, model, trainer


def host(tree):
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def fresh(ds, config, model, sparsity, options=eps.EdgePopupOptions()):
    """As run_level builds it: weights and scores from the config's seed."""
    key_weights, key_scores = jax.random.split(jax.random.key(config.seed))
    variables = init_variables(model, key_weights, (1,) + ds.image_shape)
    scores = init_scores(key_scores, kernels(variables.weights))
    rule = EdgePopup(eps.layer_targets(model, variables.weights, sparsity, options))
    return variables, scores, rule


# ----------------------------------------------------------------------------- frozen weights


def test_weights_bit_identical_after_search(setup):
    ds, config, model, trainer = setup
    variables, scores, rule = fresh(ds, config, model, 0.5)
    initial_weights, initial_scores = host(variables.weights), host(scores)
    initial_masks = host(rule.effective_masks(None, scores))
    state = trainer.new_state(variables, scores, rule, config.seed)
    state = trainer.train_epochs(state, rule, 0, data_seed=config.seed)
    assert state.bn == {}  # non-affine BN: no BN parameters exist to train
    after = host(state.weights)
    assert jax.tree.structure(after) == jax.tree.structure(initial_weights)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(initial_weights)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit, biases included
    # ... while the search did move the scores, and with them the chosen subnetwork
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(host(state.scores)),
                                                      jax.tree.leaves(initial_scores))]
    assert all(moved)
    new_masks = host(rule.effective_masks(None, state.scores))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_masks), jax.tree.leaves(initial_masks)))
    assert trainer.sparsity(state, rule) == pytest.approx(0.5, abs=1e-3)


# ----------------------------------------------------------------------------- exact counts


def expected_keep(n, s):
    return max(1, int(round((1.0 - s) * n)))


SHAPES = {"a": (7,), "b": (10,), "c": (3, 3, 1, 5), "d": (3, 3, 4, 6), "e": (64, 10), "f": (1, 1, 1, 3)}
SPARSITIES = (0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99)


def test_top_k_keeps_round_of_kept_fraction():
    rng = np.random.default_rng(0)
    scores = {name: {"kernel": jnp.asarray(rng.normal(size=shape), jnp.float32)} for name, shape in SHAPES.items()}
    # one compilation for every (layer size, sparsity) pair
    all_masks = jax.jit(lambda sc: [masks_from_scores(sc, {name: {"kernel": s} for name in SHAPES})
                                    for s in SPARSITIES])(scores)
    for sparsity, masks in zip(SPARSITIES, all_masks):
        for name, shape in SHAPES.items():
            n, m, s = int(np.prod(shape)), np.asarray(masks[name]["kernel"]), np.asarray(scores[name]["kernel"])
            assert m.shape == shape and set(np.unique(m)) <= {0.0, 1.0}
            assert int(m.sum()) == expected_keep(n, sparsity), (name, sparsity)
            # the kept ones are the largest |scores| (NumPy ranking; values are distinct)
            order = np.argsort(-np.abs(s).reshape(-1))
            ref = np.zeros(n)
            ref[order[:expected_keep(n, sparsity)]] = 1
            np.testing.assert_array_equal(m.reshape(-1), ref)


def test_top_k_exact_count_with_ties_and_dense():
    tied = jnp.ones((4, 5))  # every |score| equal: still exactly the count
    for s in (0.1, 0.5, 0.9):
        assert int(np.asarray(top_k_mask(tied, s)).sum()) == round((1 - s) * 20)
    signs = jnp.asarray([[-1.0, 1.0], [1.0, -1.0]])  # |.|: the sign never decides
    assert int(np.asarray(top_k_mask(signs, 0.5)).sum()) == 2
    assert np.all(np.asarray(top_k_mask(jnp.asarray(np.arange(-6.0, 6.0).reshape(3, 4)), 0.0)) == 1)
    assert keep_count(5, 0.99) == 1  # never an empty layer


def test_keep_largest_ranks_as_a_stable_argsort():
    """keep_largest finds the k-th largest by bisection, not a sort: it must keep what NumPy's stable
    argsort keeps (the k highest ranks; ties to the later index) with ties, signed zeros and infinities."""
    rng = np.random.default_rng(3)
    cases = [rng.normal(size=500), rng.integers(0, 4, size=500), rng.choice([-0.0, 0.0, 1.0, -1.0], size=500),
             np.concatenate([np.full(7, -np.inf), rng.normal(size=90), np.full(3, np.inf)]),
             -np.abs(rng.normal(size=64))]
    select = keep_largest  # jitted, k traced: one compilation per shape (IMP's rounds must not recompile)
    for values in cases:
        values = values.astype(np.float32)
        n = values.size
        rank = np.empty(n, np.int64)
        rank[np.argsort(values, kind="stable")] = np.arange(n)
        for k in sorted({0, 1, 2, n // 3, n // 2, n // 2 + 1, n - 1, n}):
            got = np.asarray(select(jnp.asarray(values), k))
            np.testing.assert_array_equal(got, (rank >= n - k).astype(np.float32), err_msg=f"k={k} of {n}")
    before = keep_largest._cache_size()
    for k in (3, 4, 5):  # a new k on a shape seen before compiles nothing
        keep_largest(jnp.asarray(cases[0].astype(np.float32)), k)
    assert keep_largest._cache_size() == before


@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_effective_masks_per_layer_counts(setup, sparsity):
    ds, config, model, _ = setup
    # shapes only: no need to initialise the network to count its masks
    weights = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (1,) + ds.image_shape)).weights
    scores = init_scores(jax.random.key(1), kernels(weights))
    rule = EdgePopup(eps.layer_targets(model, weights, sparsity, eps.EdgePopupOptions()))
    # dense encoding / classifier options leave exactly those layers whole
    opts = eps.EdgePopupOptions(sparsities=(sparsity,), dense_encoding=True, dense_classifier=True)
    partly_dense = EdgePopup(eps.layer_targets(model, weights, sparsity, opts))
    masks, masks_dense = jax.jit(lambda sc: (rule.effective_masks(None, sc),
                                             partly_dense.effective_masks(None, sc)))(scores)
    sizes = {n: k.size for n, k in named_kernels(weights).items()}
    got = {n: int(np.asarray(m).sum()) for n, m in named_kernels(masks).items()}
    assert set(got) == {"conv0", "conv1", "conv2", "fc"}  # first and last layer masked too
    assert got == {n: round((1 - sparsity) * sizes[n]) for n in sizes}
    got = {n: int(np.asarray(m).sum()) for n, m in named_kernels(masks_dense).items()}
    assert got["conv0"] == sizes["conv0"] and got["fc"] == sizes["fc"]
    assert got["conv1"] == round((1 - sparsity) * sizes["conv1"])


def test_masks_in_use_are_the_rules_masks_from_one_program(setup):
    """The host's call (a log's sparsity, a ticket) gives the masks the rule's own code gives, bit for bit, from one
    compiled program per rule and shapes; a rule without scores hands its masks back as they are."""
    ds, config, model, _ = setup
    variables, scores, rule = fresh(ds, config, model, 0.37)  # a level no other test compiles
    programs = _effective_masks._cache_size()
    got = masks_in_use(rule, None, scores)
    chex.assert_trees_all_equal(got, rule.effective_masks(None, scores))
    masks_in_use(rule, None, jax.tree.map(jnp.negative, scores))  # other scores, the same program
    assert _effective_masks._cache_size() == programs + 1
    assert masks_in_use(MaskedTraining(), variables.masks, {}) is variables.masks


def test_sparsity_means_fraction_removed():
    scores = {"a": {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(10, 10)), jnp.float32)}}
    masks = masks_from_scores(scores, {"a": {"kernel": 0.9}})
    assert count_kept(masks) == (10, 100)  # 0.9 keeps 10%, not 90%


# ----------------------------------------------------------------------------- the score gradient


def test_score_gradient_linear_layer_by_hand():
    """y = x @ (w * m(s)), L = sum(y * c): dL/dm = w * (x^T c), dL/ds = sign(s) dL/dm (straight-through)."""
    rng = np.random.default_rng(0)
    x, w, c = rng.normal(size=(4, 6)), rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    s = rng.normal(size=(6, 5))

    def loss(scores):
        m = top_k_mask(scores, 0.5)
        return jnp.sum((jnp.asarray(x, jnp.float32) @ (jnp.asarray(w, jnp.float32) * m)) * jnp.asarray(c, jnp.float32))

    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(s, jnp.float32)))
    expected = np.sign(s) * w * (x.T @ c)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)
    # dropped weights get their (non-zero) gradient too: that is how they can pop back up
    dropped = np.asarray(top_k_mask(jnp.asarray(s, jnp.float32), 0.5)) == 0
    assert dropped.sum() == 15 and np.all(g[dropped] != 0)
    np.testing.assert_allclose(g[dropped], expected[dropped], rtol=1e-5, atol=1e-6)


def test_score_gradient_in_spiking_network_equals_masked_weight_gradient():
    """Through conv, BN, LIF and the classifier: dL/ds = sign(s) * w * dL/dW at W = w * m."""
    model = SpikingVGG(num_classes=3, plan=(3, 4, "M"), timesteps=T, bn=BNConfig(affine=False))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)) * 2.0, jnp.float32)
    labels = jnp.arange(8) % 3

    def everything(key):  # one compilation (eager set-up costs more than the network here)
        variables = init_variables(model, key, (1, 8, 8, 1))
        scores = init_scores(jax.random.fold_in(key, 1), kernels(variables.weights))
        rule = EdgePopup(tuple((n, 0.5) for n in named_kernels(variables.weights)))
        masks = rule.effective_masks(None, scores)
        w_eff = jax.tree.map(lambda w, m: w * m, kernels(variables.weights), masks)

        def loss_scores(sc):  # edge-popup's forward pass
            logits, _, _ = apply_model(model, rule.forward_variables(variables.weights, variables.masks, sc,
                                                                       variables.bn, variables.batch_stats), x, True)
            return spike_loss(logits, labels)

        def loss_kernels(k):  # the same network with the masked kernels as ordinary weights
            weights = {**variables.weights, **{n: {**variables.weights[n], **k[n]} for n in k}}
            logits, _, _ = apply_model(model, MaskedTraining().forward_variables(
                weights, variables.masks, None, variables.bn, variables.batch_stats), x, True)
            return spike_loss(logits, labels)

        return variables.weights, scores, masks, jax.grad(loss_scores)(scores), jax.grad(loss_kernels)(w_eff)

    weights, scores, masks, gs, gk = jax.jit(everything)(jax.random.key(1))
    for name in named_kernels(weights):
        s, w = np.asarray(scores[name]["kernel"]), np.asarray(weights[name]["kernel"])
        ref = np.sign(s) * w * np.asarray(gk[name]["kernel"])
        got = np.asarray(gs[name]["kernel"])
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
        dropped = np.asarray(masks[name]["kernel"]) == 0
        assert dropped.sum() > 0 and np.count_nonzero(got[dropped]) > 0.5 * dropped.sum(), name


# ----------------------------------------------------------------------------- resumable sweep


def _comparable(entry):
    return {k: entry[k] for k in ("sparsity_target", "sparsity", "layer_sparsity", "test_accuracy", "test_loss")}


def _metrics(path):
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_sec")} for line in f]


def test_interrupted_sweep_resumes_to_identical_results(setup, tmp_path, capsys):
    ds, config, model, trainer = setup
    # the compiled steps shared; figures are not under test here
    sweep = functools.partial(eps.run, trainer=trainer, outputs=Outputs(plots=False))
    options = eps.EdgePopupOptions(sparsities=(0.3, 0.5))

    whole = sweep(config, options, str(tmp_path / "whole"))
    assert [r["sparsity_target"] for r in whole["runs"]] == [0.3, 0.5]
    with open(tmp_path / "whole" / "config.json") as f:  # the sweep claimed its workdir, as every run does
        assert json.load(f)["signature"] == eps.EdgePopupSweep(config, options).signature
    with open(tmp_path / "whole" / "results.json") as f:
        assert json.load(f) == json.loads(json.dumps(whole)) and "signature" not in whole  # the levels carry theirs

    workdir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):  # killed just after the second level's first epoch was saved
        sweep(config, options, workdir, hooks=crash_after_checkpoint(nth=2, segment=0, epoch=1))
    assert os.path.exists(os.path.join(level_dir(workdir, 0.3), "results.json"))
    assert not os.path.exists(os.path.join(level_dir(workdir, 0.5), "results.json"))

    capsys.readouterr()
    resumed = sweep(config, options, workdir)
    out = capsys.readouterr().out
    assert "sparsity 0.30: already complete" in out
    assert "resuming from" in out and "at epoch 1/2" in out
    assert "epoch 1:" not in out  # the finished epoch is not trained again
    assert [_comparable(r) for r in resumed["runs"]] == [_comparable(r) for r in whole["runs"]]
    assert untimed(resumed["runs"]) == untimed(whole["runs"])  # every field, less timings
    for s in (0.3, 0.5):  # each level's results and ticket arrays, byte for byte
        level, reference = run_outcome(level_dir(workdir, s)), run_outcome(level_dir(str(tmp_path / "whole"), s))
        assert level == reference and len(level[1]) == 1
        a = _metrics(os.path.join(level_dir(str(tmp_path / "whole"), s), "metrics.jsonl"))
        b = _metrics(os.path.join(level_dir(workdir, s), "metrics.jsonl"))
        assert [r["epoch"] for r in b] == [1, 2] and a == b
    # rerunning a finished sweep does nothing new and returns the same results
    again = sweep(config, options, workdir)
    assert [_comparable(r) for r in again["runs"]] == [_comparable(r) for r in whole["runs"]]


# ----------------------------------------------------------------------------- the random-mask floor


def test_random_floor_keeps_the_levels_counts_on_the_frozen_weights_with_recalibrated_bn(setup, tmp_path,
                                                                                          monkeypatch):
    """--control random: no search; a random mask with the level's per-layer counts on the weights the
    search would start from, BN running statistics recomputed on the training set (checked for the
    encoding layer against NumPy: the per-batch mean and unbiased variance of its conv, averaged)."""
    from tests.reference import numpy_conv_same

    ds, config, model, trainer = setup
    seen = {}
    evaluate = trainer.evaluate

    def capture(state, rule):
        seen["state"] = host(state)
        return evaluate(state, rule)

    monkeypatch.setattr(trainer, "evaluate", capture)
    options = eps.EdgePopupOptions(control="random")
    entry = eps.run_level(config, str(tmp_path), 0.7, options, trainer)
    with open(tmp_path / "sparsity_0.70" / "results.json") as f:
        assert json.load(f)["control"] == "random"
    state = seen["state"]
    variables, scores, rule = fresh(ds, config, model, 0.7)
    for name, w in named_kernels(state.weights).items():
        np.testing.assert_array_equal(w, np.asarray(named_kernels(variables.weights)[name]))  # the frozen weights
        m = named_kernels(state.masks)[name]
        assert int(m.sum()) == keep_count(m.size, 0.7), name
        assert entry["layer_sparsity"][name] == pytest.approx(1 - keep_count(m.size, 0.7) / m.size)
        search_mask = np.asarray(named_kernels(rule.effective_masks(None, scores))[name])
        assert not np.array_equal(m, search_mask), name  # not the search's starting mask either
    kernel = state.weights["conv0"]["kernel"] * state.masks["conv0"]["kernel"]
    means, variances = [], []
    for images, _ in jdata.train_batches(ds.train_images, ds.train_labels, config.batch_size, config.seed, epoch=0):
        y = numpy_conv_same(np.asarray(jdata.normalize(images.astype(np.float32), ds.mean, ds.std), np.float64),
                            kernel.astype(np.float64)).reshape(-1, kernel.shape[-1])
        means.append(y.mean(0))
        variances.append(y.var(0, ddof=1))
    np.testing.assert_allclose(state.batch_stats["conv0"]["mean"], np.mean(means, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.batch_stats["conv0"]["var"], np.mean(variances, 0), rtol=1e-4)
    with pytest.raises(ValueError, match="control"):
        eps.EdgePopupOptions(control="reinit")
    with pytest.raises(ValueError, match="distribution"):
        eps.EdgePopupOptions(distribution="global")
