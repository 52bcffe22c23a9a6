"""SET / RigL (jsnn/sparsity/dynamic.py, DynamicSparseTraining, runs/sparse_training.py).

The reference below is a NumPy transcription of google-research/rigl's ``_get_update_op`` (noise off,
ties to the lower index, inactive entries below every active one in the drop ranking as in jaxpruner),
written with Python sorts, independently of the code under test: drop floor(n_ones alpha_t) of the active
entries, smallest |W| first, then grow as many of the others (just-dropped ones included) by the largest grow
score (RigL: |dL/d(M W)|; SET: random), ties to the lower index.
"""
import dataclasses
import importlib.util
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jsnn.config import TrainConfig
from jsnn.objective import preprocess, spike_loss
from jsnn.parallel import put_batch
from jsnn.runs import registry
from jsnn.runs.outputs import Outputs
from jsnn.runs.sparse_training import SparseTrainingOptions, sparse_optimizer, with_optimizer
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import dynamic
from jsnn.ticket import load_ticket
from jsnn.training_rules import DynamicSparseTraining
from jsnn.variables import (
    Variables,
    apply_model,
    by_name,
    from_names,
    init_variables,
    kernels,
    named_kernels,
    with_kernels,
)
from tests.outcomes import crash_after_checkpoint

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train")
sys.path.insert(0, TRAIN)  # the programs import their shared flags as `flags`
_spec = importlib.util.spec_from_file_location("train_program_sparse_training",
                                               os.path.join(TRAIN, "sparse_training.py"))
program = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(program)
import flags  # noqa: E402  (on the path above)

# -- the NumPy reference -----------------------------------------------------------------------------------


def reference_update(mask, weight, grow_score, alpha):
    """(new mask, dropped indices, grown indices (not active before)) of one layer, flat."""
    m, w, g = mask.reshape(-1) > 0, weight.reshape(-1), np.abs(grow_score.reshape(-1))
    n = m.size
    n_ones = int(m.sum())
    n_prune = int(math.floor(float(np.float32(n_ones) * np.float32(alpha))))  # rigl: int(n_ones * alpha)
    active = [i for i in range(n) if m[i]]
    keep = sorted(active, key=lambda i: (-abs(float(w[i])), i))[:n_ones - n_prune]
    rest = [i for i in range(n) if i not in set(keep)]
    grow = sorted(rest, key=lambda i: (-float(g[i]), i))[:n_prune]
    new = np.zeros(n, bool)
    new[keep] = True
    new[grow] = True
    return new.reshape(mask.shape), sorted(set(active) - set(keep)), sorted(set(grow) - set(active))


def one_layer(mask, weight, momentum=None):
    """A weights tree with one 2-D kernel and a bias, its mask tree and an SGD-momentum state."""
    weights = {"fc": {"kernel": jnp.asarray(weight, jnp.float32), "bias": jnp.ones(weight.shape[-1])}}
    masks = {"fc": {"kernel": jnp.asarray(mask, jnp.float32)}}
    opt = optax.sgd(0.1, momentum=0.9).init({"weights": weights, "bn": {}})
    if momentum is not None:
        opt = jax.tree.map(lambda x: jnp.asarray(momentum, jnp.float32).reshape(x.shape) if x.shape == weight.shape
                           else jnp.full_like(x, 7.0), opt)
    return weights, masks, opt


def test_a_worked_update_vector_and_a_dropped_and_regrown_weight():
    mask = np.array([[0, 1, 0, 1, 0, 1, 1, 0]], np.float32)
    weight = np.array([[0, 1.5, 0, -1, 0, 8, -2, 0]], np.float32)
    grad = np.array([[.9, .1, .4, .2, .5, .3, .6, .05]], np.float32)
    momentum = np.arange(1, 9, dtype=np.float32).reshape(1, 8)
    weights, masks, opt = one_layer(mask, weight, momentum)
    w, m, o = dynamic.mask_update(weights, masks, opt, {"fc": {"kernel": jnp.asarray(grad)}}, 0.5,
                                  jax.random.key(0), "rigl")
    np.testing.assert_array_equal(m["fc"]["kernel"], [[1, 0, 0, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(w["fc"]["kernel"], [[0, 0, 0, 0, 0, 8, -2, 0]])  # grown 0, dropped 0
    np.testing.assert_array_equal(w["fc"]["bias"], np.ones(8))  # biases untouched
    trace = o[0].trace["weights"]["fc"]["kernel"]
    np.testing.assert_array_equal(trace, [[0, 2, 3, 4, 0, 6, 7, 8]])  # moments zeroed where grown only
    np.testing.assert_array_equal(o[0].trace["weights"]["fc"]["bias"], np.full(8, 7.0))

    grad[0, 3] = .95  # index 3 is dropped and regrown: keeps its value and its momentum
    w, m, o = dynamic.mask_update(weights, masks, opt, {"fc": {"kernel": jnp.asarray(grad)}}, 0.5,
                                  jax.random.key(0), "rigl")
    np.testing.assert_array_equal(m["fc"]["kernel"], [[1, 0, 0, 1, 0, 1, 1, 0]])
    np.testing.assert_array_equal(w["fc"]["kernel"], [[0, 0, 0, -1, 0, 8, -2, 0]])
    np.testing.assert_array_equal(o[0].trace["weights"]["fc"]["kernel"], [[0, 2, 3, 4, 5, 6, 7, 8]])


def test_rigls_floor_rounding_is_pinned():
    # n_ones = 10, alpha = 0.15: rigl drops int(1.5) = 1; jaxpruner's round(10 * 0.85) keeps 8 (drops 2)
    mask = np.ones((1, 12), np.float32)
    mask[0, 10:] = 0
    weight = np.where(mask > 0, np.arange(1, 13, dtype=np.float32), 0).astype(np.float32)
    score = np.zeros((1, 12), np.float32)
    score[0, 10:] = (1.0, 0.9)
    new, grown = dynamic.update_layer_mask(jnp.asarray(mask), jnp.asarray(weight), jnp.asarray(score), 0.15)
    assert int(np.sum(new)) == 10 and not bool(new[0, 0]) and bool(new[0, 10])  # weight 1 dropped, index 10 grown
    assert np.flatnonzero(np.asarray(grown)).tolist() == [10]


def test_several_consecutive_updates_match_the_numpy_reference():
    rng = np.random.default_rng(0)
    shapes = {"a": (6, 5), "b/conv": (3, 3, 2, 4)}
    key = jax.random.key(3)
    masks = dynamic.initial_masks(key, from_names({n: np.ones(s, np.float32) for n, s in shapes.items()}), 0.6,
                                  "uniform")
    counts = {n: int(np.sum(m)) for n, m in by_name(masks).items()}
    assert counts == {n: round(0.4 * math.prod(s)) for n, s in shapes.items()}
    weights = from_names({n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()})
    weights = dynamic.remask(weights, masks)
    opt = optax.adam(1e-3).init({"weights": weights, "bn": {}})
    opt = jax.tree.map(lambda x: jnp.ones_like(x) if x.ndim else x, opt)  # non-zero moments everywhere
    assert len(kernel_moments(opt, "b/conv")) == 2  # Adam's mu and nu
    end_step = 40
    update = jax.jit(dynamic.mask_update, static_argnums=6)
    for step in (0, 10, 20, 30):
        alpha = float(dynamic.drop_fraction_at(step, 0.5, end_step))
        grads = from_names({n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()})
        new_w, new_m, new_o = update(weights, masks, opt, grads, alpha, key, "rigl")
        for name in shapes:
            old_m, w = np.asarray(by_name(masks)[name]), np.asarray(by_name(kernels(weights))[name])
            want, dropped, grown = reference_update(old_m, w, np.asarray(by_name(grads)[name]), alpha)
            got = np.asarray(by_name(new_m)[name])
            np.testing.assert_array_equal(got > 0, want, err_msg=f"{name} at step {step}")
            assert int(got.sum()) == counts[name]  # exact per-layer count
            got_w = np.asarray(by_name(kernels(new_w))[name]).reshape(-1)
            gone = [i for i in dropped if not want.reshape(-1)[i]]  # dropped and not regrown
            assert np.all(got_w[grown] == 0) and np.all(got_w[gone] == 0)
            assert np.all(got_w[want.reshape(-1) & (old_m.reshape(-1) > 0)]
                          == w.reshape(-1)[want.reshape(-1) & (old_m.reshape(-1) > 0)])
            for before, after in zip(kernel_moments(opt, name), kernel_moments(new_o, name), strict=True):
                want_moment = before.reshape(-1).copy()
                want_moment[grown] = 0  # zeroed where grown, kept everywhere else (dropped ones too)
                np.testing.assert_array_equal(after.reshape(-1), want_moment)
            if step == 0:
                assert len(grown) > 0
        # training between updates: the active weights move, the pruned stay 0
        weights = dynamic.remask(jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(np.float32) * 0.3, new_w),
                                 new_m)
        masks, opt = new_m, new_o


def test_set_grows_random_positions_from_a_fixed_key():
    shapes = {"a": (8, 8)}
    masks = dynamic.initial_masks(jax.random.key(0), from_names({"a": np.ones((8, 8), np.float32)}), 0.75, "uniform")
    weights = dynamic.remask(from_names({"a": np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)}), masks)
    opt = optax.sgd(0.1).init({"weights": weights})
    grads = from_names({"a": np.zeros(shapes["a"], np.float32)})
    runs = [dynamic.mask_update(weights, masks, opt, grads, 0.5, jax.random.key(k), "set")[1] for k in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0]["a"]["kernel"], runs[1]["a"]["kernel"])
    assert not np.array_equal(runs[0]["a"]["kernel"], runs[2]["a"]["kernel"])
    scores = jax.random.uniform(jax.random.fold_in(jax.random.key(5), 0), (8, 8))  # layer 0's key
    want, _, grown = reference_update(np.asarray(masks["a"]["kernel"]), np.asarray(weights["a"]["kernel"]),
                                      np.asarray(scores), 0.5)
    np.testing.assert_array_equal(np.asarray(runs[0]["a"]["kernel"]) > 0, want)
    assert int(np.sum(runs[0]["a"]["kernel"])) == 16 and len(grown) > 0


def test_cosine_schedule_and_update_steps():
    for t in (0, 7, 25, 50, 99, 100, 150):
        want = 0.3 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))
        assert float(dynamic.drop_fraction_at(t, 0.3, 100)) == pytest.approx(want, abs=1e-6)
    assert float(dynamic.drop_fraction_at(100, 0.3, 100)) == 0.0
    got = [t for t in range(300) if bool(dynamic.is_update_step(t, 20, 150))]
    assert got == list(range(0, 141, 20)) == dynamic.update_steps(300, 20, 150)


def test_initial_masks_have_exact_erk_counts():
    # an ERK vector worked out with jaxpruner: S = 0.9 -> 0.907796, 0.907796 and a dense classifier
    shapes = {"a": (3, 3, 64, 64), "b": (3, 3, 64, 64), "fc": (64, 10)}
    like = from_names({n: np.ones(s, np.float32) for n, s in shapes.items()})
    masks = dynamic.initial_masks(jax.random.key(0), like, 0.9, "erk")
    counts = dynamic.layer_counts(shapes, 0.9, "erk")
    assert {n: int(np.sum(m)) for n, m in by_name(masks).items()} == counts
    for name, s in (("a", 0.907796), ("b", 0.907796), ("fc", 0.0)):
        # within 2: jaxpruner budgets sum(N - floor(S N)) where jsnn.sparsity.distributions budgets (1 - S) sum(N)
        # (here 6798 against 6796.8 weights over the two free layers), then each count is rounded
        assert abs(counts[name] - (1 - s) * math.prod(shapes[name])) <= 2, name
    assert counts["fc"] == 640
    other = dynamic.initial_masks(jax.random.key(1), like, 0.9, "erk")
    assert not np.array_equal(by_name(masks)["a"], by_name(other)["a"])  # random positions, same counts


# -- in the train step -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(digits_sparse_training):
    return digits_sparse_training  # conftest.py: one Trainer for this file and its neighbour, compiled once


def start(trainer, config, rule, sparsity=0.9, seed=0):
    key_w, key_m = jax.random.split(jax.random.key(seed))
    v = init_variables(trainer.model, key_w, (1,) + trainer.dataset.image_shape)
    masks = dynamic.initial_masks(key_m, v.masks, sparsity, "erk")
    return trainer.new_state(Variables(dynamic.remask(v.weights, masks), masks, v.bn, v.batch_stats), {}, rule,
                             seed)


def batches(trainer, n):
    d = trainer.dataset
    for i in range(n):
        j = (i * 64) % (len(d.train_labels) - 63)
        yield put_batch(trainer.mesh, d.train_images[j:j + 64], d.train_labels[j:j + 64])


def host(tree):
    return jax.tree.map(np.asarray, tree)


def kernel_moments(opt_state, name):
    """Every optimizer-state leaf of kernel ``name``."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        keys = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
        if keys[-(len(name.split("/")) + 2):] == ("weights", *name.split("/"), "kernel"):
            out.append(np.asarray(leaf))
    return out


# the rule of the end-to-end run below (6 steps, end step int(0.75 * 6) = 4): one compilation for both
RIGL = DynamicSparseTraining("rigl", 0.3, 3, 4)


def test_rigl_in_the_jitted_step(small):
    """One compiled step: RigL grows the pruned entry with the largest true gradient, the update iteration
    also takes the weight step, updates happen at steps 0 and 3 only (every 3 up to the end step 4), and
    nothing recompiles."""
    config, ds, trainer = small
    rule = RIGL
    state = start(trainer, config, rule)
    data = list(batches(trainer, 7))
    images, labels = data[0]
    before = host(state)

    @jax.jit
    def true_gradient(effective):  # dL/d(dense effective kernels), written from scratch
        ones = jax.tree.map(jnp.ones_like, state.masks)

        def loss(e):
            variables = Variables(with_kernels(state.weights, e), ones, state.bn, state.batch_stats)
            logits, _, _ = apply_model(trainer.model, variables, preprocess(images, ds.mean, ds.std), train=True)
            return spike_loss(logits, labels)

        return jax.grad(loss)(effective)

    true = true_gradient(kernels(state.weights))
    true = host(by_name(true))
    train = trainer.jitted_steps(rule)[0]
    state, _ = train(state, images, labels, trainer.stop_flags())
    after = host(state)
    grown_any = False
    for name, g in true.items():
        old, new = by_name(before.masks)[name], by_name(after.masks)[name]
        w0, w1 = by_name(kernels(before.weights))[name], by_name(kernels(after.weights))[name]
        # the weight step on the update iteration: SGD's first step, w - lr (g + wd w), where both masks keep w
        both = (old > 0) & (new > 0)
        np.testing.assert_allclose(w1[both], (w0 - config.lr * (g + config.weight_decay * w0))[both],
                                   rtol=1e-4, atol=1e-6)
        if old.all():
            continue
        pruned = np.flatnonzero(old.reshape(-1) == 0)
        best = pruned[np.argmax(np.abs(g.reshape(-1)[pruned]))]
        assert new.reshape(-1)[best] == 1, name  # grown ...
        assert w1.reshape(-1)[best] == 0  # ... at exactly 0
        grown_any = True
    assert grown_any
    changed = [True]
    for images, labels in data[1:]:
        old = host(state.masks)
        state, _ = train(state, images, labels, trainer.stop_flags())
        changed.append(any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old),
                                                                      jax.tree.leaves(host(state.masks)))))
    assert changed == [True, False, False, True, False, False, False]  # steps 0, 3 (6 is past the end step)
    assert train._cache_size() == 1


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 5e-4), ("sgd_drop_all", 5e-4), ("adam", 1e-3),
                                                     ("adamw", 1e-2)])
def test_no_zombie_weights_after_any_step(small, optimizer, weight_decay):
    config, ds, base = small
    if optimizer == "sgd":
        # SGD with momentum 0.9, weight decay 5e-4 added to the gradient: after the update at step 0, steps 1
        # and 2 carry momentum into just-dropped weights (the classic zombie), then the update at step 3
        trainer, rule = base, RIGL
    elif optimizer == "sgd_drop_all":
        trainer, rule = base, DynamicSparseTraining("rigl", 1.0, 1, 1000)
    else:
        config = dataclasses.replace(config, weight_decay=weight_decay, lr=0.01)
        trainer = with_optimizer(base, sparse_optimizer(optimizer, config, 3))
        # drop fraction 1.0 and an update at every step (back to back); the end step past the run
        rule = DynamicSparseTraining("rigl", 1.0, 1, 1000)
    state = start(trainer, config, rule, seed=2)
    counts = {n: int(np.sum(m)) for n, m in by_name(host(state.masks)).items()}
    train = trainer.jitted_steps(rule)[0]
    grew = []
    for images, labels in batches(trainer, 4):
        old = host(state.masks)
        state, _ = train(state, images, labels, trainer.stop_flags())
        now = host(state)
        for name, m in by_name(now.masks).items():
            w = by_name(kernels(now.weights))[name]
            assert np.all(w[m == 0] == 0), (optimizer, name)  # pruned: exactly zero
            assert int(np.sum(m)) == counts[name]
            grown = (m > 0) & (by_name(old)[name] == 0)
            grew.append(grown.any())
            assert np.all(w[grown] == 0)
            moments = kernel_moments(now.opt_state, name)
            assert moments, (optimizer, name)
            for leaf in moments:
                assert np.all(leaf[grown] == 0)
        assert train._cache_size() == 1
    assert any(grew)  # (drop fraction 1 may regrow the same weights once every kept one is 0)


def test_run_end_to_end_and_interrupted_run_resumes_bit_identical(small, tmp_path):
    config, ds, trainer = small
    options = SparseTrainingOptions(algorithm="rigl", sparsity=0.9, update_every=3)
    outputs = Outputs(plots=False, cost_report=False)
    straight = registry.run_method("sparse_training", config, options, str(tmp_path / "a"), trainer=trainer,
                                   outputs=outputs)
    entry = straight["runs"][0]
    assert straight["method"] == "sparse_training" and straight["label"] == "RigL (erk)"
    assert trainer.jitted_steps(RIGL)[0]._cache_size() == 1  # the run's method is RIGL: the step compiled once
    assert entry["sparsity"] == pytest.approx(0.9, abs=1e-3) and entry["pruned_nonzero_weights"] == 0
    assert entry["mask_updates"] == 2 and set(entry["layer_sparsity"]) == set(named_kernels(
        init_variables(trainer.model, jax.random.key(0), (1,) + ds.image_shape).weights))
    ticket = load_ticket(str(tmp_path / "a" / "ticket.npz"))
    for name, m in by_name(ticket.variables.masks).items():
        assert np.all(np.asarray(by_name(kernels(ticket.variables.weights))[name])[np.asarray(m) == 0] == 0)

    workdir = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):  # killed just after the checkpoint at batch 2 of epoch 1
        registry.run_method("sparse_training", config, options, workdir, trainer=trainer, outputs=outputs,
                            hooks=crash_after_checkpoint(segment=0, epoch=0, batch=2))
    resumed = registry.run_method("sparse_training", config, options, workdir, trainer=trainer, outputs=outputs)
    assert resumed["runs"][0]["test_accuracy"] == entry["test_accuracy"]
    other = load_ticket(os.path.join(workdir, "ticket.npz"))
    for x, y in zip(jax.tree.leaves(ticket.variables), jax.tree.leaves(other.variables), strict=True):
        np.testing.assert_array_equal(x, y)
    with open(tmp_path / "a" / "results.json") as f:
        assert json.load(f)["signature"]["algorithm"] == "rigl"


def test_the_program_builds_its_options_and_config():
    args = program.parser().parse_args(["--algorithm", "set", "--sparsity", "0.8", "--distribution", "uniform",
                                        "--optimizer", "adamw", "-T", "2"])
    options = flags.options_of(args, SparseTrainingOptions)
    assert options == SparseTrainingOptions(algorithm="set", sparsity=0.8, distribution="uniform", optimizer="adamw")
    config = flags.training_config(args, "sparse_training")
    assert config.model == "digits_cnn" and config.epochs == 15 and config.timesteps == 2
    assert options.resolve(config).update_every == 10
    assert options.resolve(dataclasses.replace(config, dataset="cifar10")).update_every == 100
    with pytest.raises(ValueError, match="--algorithm"):
        SparseTrainingOptions(algorithm="nope").resolve(config)
    assert run_signature("sparse_training", TrainConfig.from_dict(TrainConfig().to_dict())) == \
        run_signature("sparse_training", TrainConfig())
    # the optimizer lives in the options: old workdirs resume
    assert "optimizer" not in run_signature("sparse_training", TrainConfig())
