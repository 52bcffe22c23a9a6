"""IMP with rewinding (each round prunes a fraction of the surviving weights and rewinds the rest), SF-IMP-2's
dynamic network surgery (the encoding and FC layers' masks only in the loss's forward pass, so a pruned weight
there can come back) and resumable rounds.

Mask arithmetic is checked against NumPy rankings on synthetic trees; the
training behaviour (pruned weights stay 0, rewinding, DNS, resuming) on a
small digits setup (256 train images, T = 2, batch 64, 2 epochs a round)
sharing one Trainer, so each method compiles once.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import jsnn.runs.imp as imp
from jsnn import parallel
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Run
from jsnn.runs.segment import Position, RunCheckpoints
from jsnn.sparsity import masks as M
from jsnn.training_rules import MaskedTraining
from jsnn.variables import kernels, named_kernels
from tests.outcomes import crash_after_checkpoint

RATE = 0.25
LAYERS = {"conv0": (3, 3, 1, 8), "conv1": (3, 3, 8, 16), "fc": (64, 10), "tiny": (2, 3)}
NAMES = sorted(LAYERS)


def tree_of(arrays: dict) -> dict:
    return {n: {"kernel": jnp.asarray(a)} for n, a in arrays.items()}


def flat_of(tree: dict) -> dict:
    return {n: np.asarray(tree[n]["kernel"]) for n in NAMES}


def random_tree(rng):
    return {n: rng.normal(size=s).astype(np.float32) for n, s in LAYERS.items()}


def absd(arrays: dict) -> dict:
    return {n: np.abs(a) for n, a in arrays.items()}


def ones_tree():
    return {n: np.ones(s, np.float32) for n, s in LAYERS.items()}


def options(scope):
    return imp.IMPOptions(prune_rate=RATE, scope=scope, rewind_epoch=0)


def numpy_top(scores: dict, live: dict, keep: int) -> dict:
    """Global ranking in NumPy: the ``keep`` highest scores among live weights (distinct values)."""
    values = np.concatenate([np.where(live[n] > 0, scores[n], -np.inf).reshape(-1) for n in NAMES])
    chosen = np.zeros(values.size, np.float32)
    chosen[np.argsort(-values, kind="stable")[:keep]] = 1
    out, start = {}, 0
    for n in NAMES:
        size = int(np.prod(LAYERS[n]))
        out[n] = chosen[start:start + size].reshape(LAYERS[n])
        start += size
    return out


def numpy_top_in_layer(scores, live, keep):
    order = np.argsort(-np.where(live > 0, scores, -np.inf).reshape(-1), kind="stable")
    out = np.zeros(scores.size, np.float32)
    out[order[:keep]] = 1
    return out.reshape(scores.shape)


TOTAL = sum(int(np.prod(s)) for s in LAYERS.values())


# ----------------------------------------------------------------------------- round-k sparsity


def test_global_round_k_keeps_total_times_075_to_the_k():
    rng = np.random.default_rng(0)
    masks = ones_tree()
    for k in range(1, 12):
        scores = random_tree(rng)  # a round of training changes the weights: fresh scores every round
        new = flat_of(imp.next_masks(tree_of(scores), tree_of(masks), options("global"), k, tree_of(absd(scores))))
        kept = sum(int(m.sum()) for m in new.values())
        assert kept == round(TOTAL * 0.75 ** k), k
        assert abs((1 - kept / TOTAL) - (1 - 0.75 ** k)) <= 0.5 / TOTAL
        assert M.sparsity_of(tree_of(new)) == 1 - kept / TOTAL
        for n in NAMES:
            assert np.all(new[n] <= masks[n])  # pruned weights stay pruned
        ref = numpy_top(scores, masks, kept)
        for n in NAMES:
            np.testing.assert_array_equal(new[n], ref[n])
        masks = new
    assert 1 - kept / TOTAL == pytest.approx(1 - 0.75 ** 11, abs=0.5 / TOTAL)


def test_uniform_round_k_per_layer():
    rng = np.random.default_rng(1)
    masks = ones_tree()
    for k in range(1, 12):
        scores = random_tree(rng)
        new = flat_of(imp.next_masks(tree_of(scores), tree_of(masks), options("uniform"), k, tree_of(absd(scores))))
        for n in NAMES:
            size = int(np.prod(LAYERS[n]))
            assert int(new[n].sum()) == max(1, round(size * 0.75 ** k)), (n, k)
            assert np.all(new[n] <= masks[n])
            np.testing.assert_array_equal(new[n], numpy_top_in_layer(scores[n], masks[n], int(new[n].sum())))
        masks = new


def test_matched_scope_each_layer_keeps_what_global_magnitude_gives_it():
    rng = np.random.default_rng(2)
    masks = ones_tree()
    weights = random_tree(rng)
    for k in range(1, 9):
        weights = {n: w + 0.3 * rng.normal(size=w.shape).astype(np.float32) for n, w in weights.items()}
        criterion = {n: v ** 2 for n, v in random_tree(rng).items()}  # a criterion that disagrees with magnitude
        new = flat_of(imp.next_masks(tree_of(criterion), tree_of(masks), options("matched"), k,
                                     tree_of(absd(weights))))
        keep_total = round(TOTAL * 0.75 ** k)
        by_magnitude = numpy_top(absd(weights), masks, keep_total)
        assert sum(int(m.sum()) for m in new.values()) == keep_total
        for n in NAMES:
            assert int(new[n].sum()) == int(by_magnitude[n].sum()), (n, k)
            # which weights go, within the layer, is the criterion's choice
            np.testing.assert_array_equal(new[n], numpy_top_in_layer(criterion[n], masks[n], int(new[n].sum())))
            assert np.all(new[n] <= masks[n])
        masks = new


def test_dns_layer_revives_a_pruned_weight_at_the_next_pruning():
    rng = np.random.default_rng(3)
    scores = random_tree(rng)
    round1 = flat_of(imp.next_masks(tree_of(absd(scores)), tree_of(ones_tree()), options("global"), 1,
                                    tree_of(absd(scores))))
    fc_dead = tuple(np.argwhere(round1["fc"] == 0)[0])
    conv_dead = tuple(np.argwhere(round1["conv1"] == 0)[0])
    scores2 = {n: np.abs(s) for n, s in scores.items()}
    scores2["fc"][fc_dead] = 1e6  # the pruned fc weight grew large while training (DNS trains it)
    scores2["conv1"][conv_dead] = 1e6  # a pruned weight outside DNS cannot compete, whatever its score
    for scope in ("global", "matched"):
        new = flat_of(imp.next_masks(tree_of(scores2), tree_of(round1), options(scope), 2, tree_of(scores2),
                                     revivable=("conv0", "fc")))
        assert new["fc"][fc_dead] == 1, scope
        assert new["conv1"][conv_dead] == 0, scope
        assert sum(int(m.sum()) for m in new.values()) == round(TOTAL * 0.75 ** 2)
        assert np.all(new["conv1"] <= round1["conv1"]) and np.all(new["tiny"] <= round1["tiny"])
    # without DNS the same weight stays pruned
    new = flat_of(imp.next_masks(tree_of(scores2), tree_of(round1), options("global"), 2, tree_of(scores2)))
    assert new["fc"][fc_dead] == 0


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def setup(digits_imp):
    """The session's small digits IMP setup (tests/small_data.py): 256 images, T = 2, batch 64, 2 epochs."""
    return digits_imp


def host(tree):
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def assert_trees_bit_equal(a, b, what=""):
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys(), what
    for k in fa:
        x, y = np.asarray(fa[k]), np.asarray(fb[k])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (what, k)


def new_run(setup, workdir, hooks=RunHooks(), **opts):
    """An IMP run (figures off: not under test here)."""
    ds, config, model, trainer = setup
    options = imp.IMPOptions(**{"rounds": 3, "rewind_epoch": 1, **opts}).resolve(config)
    return Run(imp.IMPPlan(config, options), config, str(workdir), trainer=trainer, outputs=Outputs(plots=False),
               hooks=hooks)


class RoundDriver:
    """An IMP run's plan driven one step at a time, the way ``Run.execute`` drives it."""

    def __init__(self, setup, workdir, **opts):
        self.run = new_run(setup, workdir, **opts)
        self.plan, self.trainer, self.config = self.run.plan, self.run.trainer, self.run.config
        self.plan.setup(self.run)
        self.run.checkpoints = RunCheckpoints(self.trainer, str(workdir), self.plan.signature)
        self.variables, self.rule, self.options = self.plan.variables, self.plan.rule, self.plan.options

    @property
    def rewind(self):
        return self.plan.rewind

    def train_round(self, state, round_index):
        return self.plan.train(self.run, state, Position(round_index), None)

    def prune_and_rewind(self, state, rewind, round_index):
        self.plan.rewind = rewind
        return self.plan.next_segment(self.run, state, round_index)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def round0(setup, tmp_path_factory):
    """Round 0 of a magnitude IMP run with late rewinding to epoch 1 (of 2)."""
    run = RoundDriver(setup, tmp_path_factory.mktemp("round0"))
    initial = host(run.variables)  # the train step donates (consumes) the state it is given
    state = run.trainer.new_state(run.variables, {}, run.rule, run.config.seed)
    trained = run.train_round(state, 0)
    rewind = run.rewind
    return run, trained, rewind, initial


def test_rewind_point_is_the_state_after_the_rewind_epoch(setup, round0):
    ds, config, model, trainer = setup
    run, _, rewind, initial = round0
    # an independent run of the same first epoch, stopped there
    captured = {}

    def stop(state, done):
        captured["state"] = host(state)
        raise _Stop

    state = trainer.new_state(jax.tree.map(jnp.array, initial), {}, run.rule, config.seed)
    with pytest.raises(_Stop):
        trainer.train_epochs(state, run.rule, 0, data_seed=config.seed, on_epoch_end=stop)
    ref = captured["state"]
    assert_trees_bit_equal(rewind["weights"], ref.weights, "weights")
    assert_trees_bit_equal(rewind["bn"], ref.bn, "bn")
    assert_trees_bit_equal(rewind["batch_stats"], ref.batch_stats, "batch_stats")


def test_prune_rewinds_every_survivor_bit_for_bit_and_pruned_stay_zero(setup, round0):
    ds, config, model, trainer = setup
    run, trained, rewind, _ = round0
    trained_host = host(trained)
    pruned = run.prune_and_rewind(jax.tree.map(jnp.array, trained), rewind, 1)
    masks = host(pruned.masks)
    kept, total = M.count_kept(masks)
    assert kept == round(total * 0.75)
    # global magnitude on the trained weights, ranked in NumPy
    mags = np.concatenate([np.abs(k).reshape(-1) for k in named_kernels(trained_host.weights).values()])
    threshold = np.sort(mags)[::-1][kept - 1]
    for name, m in named_kernels(masks).items():
        w_trained = np.abs(named_kernels(trained_host.weights)[name])
        np.testing.assert_array_equal(m, (w_trained >= threshold).astype(m.dtype))
    # survivors: the rewind point's values bit for bit; pruned: exactly 0
    for name, w in named_kernels(host(pruned.weights)).items():
        m = named_kernels(masks)[name].astype(bool)
        r = named_kernels(rewind["weights"])[name]
        assert w[m].tobytes() == r[m].tobytes(), name
        assert np.all(w[~m] == 0), name  # (-0.0 where the rewind value was negative)
    np.testing.assert_array_equal(np.asarray(pruned.weights["fc"]["bias"]), rewind["weights"]["fc"]["bias"])
    assert_trees_bit_equal(host(pruned.bn), rewind["bn"], "bn")
    assert_trees_bit_equal(host(pruned.batch_stats), rewind["batch_stats"], "batch_stats")
    # and not merely the trained values: training moved them
    assert not np.array_equal(trained_host.weights["conv1"]["kernel"], rewind["weights"]["conv1"]["kernel"])
    # a fresh optimizer: step 0, zero momentum
    assert int(pruned.step) == 0
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(pruned.opt_state) if np.ndim(x) > 0)

    # a round of training: the pruned weights are still exactly 0, the survivors moved
    masks_before = host(pruned.masks)
    rewind_before = host(rewind)
    after = run.train_round(pruned, 1)
    after = host(after)
    assert_trees_bit_equal(rewind, rewind_before, "the rewind point after a round of training")
    assert_trees_bit_equal(after.masks, masks_before, "masks")
    for name, w in named_kernels(after.weights).items():
        m = named_kernels(masks_before)[name].astype(bool)
        assert np.all(w[~m] == 0), name
        assert not np.array_equal(w[m], named_kernels(rewind["weights"])[name][m]), name


def test_momentum_and_weight_decay_cannot_revive_pruned_weights(setup, round0):
    """Prune in the middle of training, keeping the momentum that pushes the pruned weights."""
    ds, config, model, trainer = setup
    run, trained, _, _ = round0
    trained = host(trained)
    momentum = trained.opt_state[1][0].trace["weights"]
    scores = jax.tree.map(jnp.asarray, kernels(trained.weights))
    masks = host(imp.next_masks(jax.tree.map(jnp.abs, scores), trained.masks, imp.IMPOptions(scope="global"), 2,
                                jax.tree.map(jnp.abs, scores)))
    for name, m in named_kernels(masks).items():  # precondition: non-zero momentum on pruned weights
        assert np.count_nonzero(named_kernels(momentum)[name][m == 0]) > 0, name
    weights = traverse_util.unflatten_dict({**traverse_util.flatten_dict(trained.weights), **traverse_util.flatten_dict(
        M.apply_masks(kernels(trained.weights), masks))})
    state = trainer.fresh_optimizer(trained, run.rule, 0).replace(weights=weights, masks=masks,
                                                                    opt_state=trained.opt_state, step=trained.step)
    state = parallel.put_replicated(trainer.mesh, state)
    state = trainer.train_epochs(state, run.rule, 0, data_seed=7)
    for name, w in named_kernels(host(state.weights)).items():
        m = named_kernels(masks)[name]
        assert np.all(w[m == 0] == 0), name


def test_dns_trains_pruned_encoding_and_fc_weights_and_revives_them(setup, tmp_path):
    """SF-IMP-2: DNS on the encoding layer and the classifier."""
    ds, config, model, trainer = setup
    run = RoundDriver(setup, tmp_path, criterion="sf", dns=True, calibration_batches=2)
    assert run.options.scope == "matched"
    assert imp.dns_layers(model, run.variables.weights) == ("conv0", "fc")
    assert run.rule.dns_layers == ("conv0", "fc")
    state = trainer.new_state(run.variables, {}, run.rule, config.seed)
    trained = run.train_round(state, 0)
    rewind = run.rewind
    trained_host = host(trained)
    pruned = run.prune_and_rewind(trained, rewind, 1)
    masks = host(pruned.masks)
    assert M.count_kept(masks)[0] == round(M.count_kept(masks)[1] * 0.75)
    # matched scope: each layer loses what global magnitude on the trained weights takes from it
    mags = {n: np.abs(k) for n, k in named_kernels(trained_host.weights).items()}
    cut = np.sort(np.concatenate([m.reshape(-1) for m in mags.values()]))[::-1][M.count_kept(masks)[0] - 1]
    for n, m in named_kernels(masks).items():
        assert int(m.sum()) == int((mags[n] >= cut).sum()), n
    w0 = host(pruned.weights)
    for name in ("conv0", "fc"):  # DNS layers: rewound without the mask
        np.testing.assert_array_equal(w0[name]["kernel"], rewind["weights"][name]["kernel"])
        assert np.count_nonzero(masks[name]["kernel"] == 0) > 0, name
    for name in ("conv1", "conv2"):
        assert np.all(w0[name]["kernel"][masks[name]["kernel"] == 0] == 0)

    # the loss's forward pass applies the masks in DNS layers too: the same test loss, to the bit, as
    # plain masked training of the weights multiplied by the masks
    masked = pruned.replace(weights=traverse_util.unflatten_dict({**traverse_util.flatten_dict(pruned.weights),
                            **traverse_util.flatten_dict(M.apply_masks(kernels(pruned.weights), pruned.masks))}))
    assert trainer.evaluate(pruned, run.rule) == trainer.evaluate(masked, MaskedTraining())

    after = run.train_round(pruned, 1)
    w1 = host(after.weights)
    for name in ("conv0", "fc"):  # pruned entries keep training
        dead = masks[name]["kernel"] == 0
        assert np.count_nonzero(w1[name]["kernel"][dead] != w0[name]["kernel"][dead]) > 0.5 * dead.sum(), name
    for name in ("conv1", "conv2"):  # outside DNS they stay exactly 0
        assert np.all(w1[name]["kernel"][masks[name]["kernel"] == 0] == 0)

    # a pruned fc weight that grew large comes back at the next pruning; a pruned conv1 weight cannot
    fc_dead = tuple(np.argwhere(masks["fc"]["kernel"] == 0)[0])
    conv_dead = tuple(np.argwhere(masks["conv1"]["kernel"] == 0)[0])
    weights = jax.tree.map(np.array, w1)
    weights["fc"]["kernel"][fc_dead] = 50.0
    weights["conv1"]["kernel"][conv_dead] = 50.0
    revived = run.prune_and_rewind(after.replace(weights=jax.tree.map(jnp.asarray, weights)), rewind, 2)
    m2 = host(revived.masks)
    assert m2["fc"]["kernel"][fc_dead] == 1
    assert m2["conv1"]["kernel"][conv_dead] == 0
    assert M.count_kept(m2)[0] == round(M.count_kept(m2)[1] * 0.75 ** 2)


# ----------------------------------------------------------------------------- resuming


def _runs(results):
    return [{k: r[k] for k in ("round", "sparsity", "sparsity_target", "layer_sparsity", "test_accuracy",
                                "test_loss")} for r in results["runs"]]


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_sec")} for line in f]


def test_interrupted_imp_run_resumes_to_identical_results(setup, tmp_path, capsys):
    whole = new_run(setup, tmp_path / "whole").execute()
    assert [r["round"] for r in whole["runs"]] == [0, 1, 2]
    assert [r["sparsity"] for r in whole["runs"]] == pytest.approx([0, 0.25, 0.4375], abs=1e-4)

    workdir = tmp_path / "interrupted"
    # killed in the middle of round 1, then just after pruning for round 2
    for segment_, epoch in ((1, 1), (2, 0)):
        with pytest.raises(KeyboardInterrupt):
            new_run(setup, workdir, hooks=crash_after_checkpoint(segment=segment_, epoch=epoch)).execute()
    capsys.readouterr()
    resumed = new_run(setup, workdir).execute()
    out = capsys.readouterr().out
    assert "resuming from" in out and "round 2, epoch 0/2" in out
    assert _runs(resumed) == _runs(whole)
    assert _metrics(str(workdir)) == _metrics(str(tmp_path / "whole"))
    with open(workdir / "results.json") as f:
        assert _runs(json.load(f)) == _runs(whole)


def test_imp_run_resolves_its_options(setup, tmp_path):
    """IMPPlan(config, IMPOptions()) must behave as the program's resolved options do: unresolved, the
    rewind point was never taken (round 1 crashed on rewind None) and any scope but global/layerwise
    silently meant 'matched'."""
    ds, config, model, trainer = setup
    run = imp.IMPPlan(config, imp.IMPOptions(rounds=2))
    assert run.options == imp.IMPOptions(rounds=2).resolve(config)
    assert run.options.rewind_epoch == min(2, config.epochs) and run.options.scope == "global"
    assert imp.IMPPlan(config, imp.IMPOptions(criterion="sf")).options.scope == "matched"
    with pytest.raises(ValueError, match="scope"):
        imp.IMPPlan(config, imp.IMPOptions(scope="bogus"))


def test_dns_forward_uses_the_kernel_not_the_bias_in_init_order():
    """Fresh init dicts list a linear layer's kernel before its bias; DNS must still mask the kernel."""
    import jax.numpy as jnp

    from jsnn.training_rules import MaskedTraining

    kernel, bias = jnp.arange(6.0).reshape(3, 2) + 1, jnp.asarray([10.0, 20.0])
    weights = {"fc": {"kernel": kernel, "bias": bias}}  # insertion order as flax init gives it
    mask = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = MaskedTraining(dns_layers=("fc",)).forward_variables(weights, {"fc": {"kernel": mask}}, {}, {}, {})
    np.testing.assert_array_equal(v.weights["fc"]["kernel"], kernel * mask)
    np.testing.assert_array_equal(v.weights["fc"]["bias"], bias)
    np.testing.assert_array_equal(v.masks["fc"]["kernel"], jnp.ones_like(mask))
