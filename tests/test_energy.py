"""The SynOps-budget variant of Shi et al. 2024's mask learning (jsnn/sparsity/gated_synops.py, energy_training.py,
jsnn/runs/energy.py): the channel groups, the differentiable SynOps count against jsnn.efficiency's exact
count, the temperature, the dual step, the layer-aware cut and its spine, no zombie weights, and the run:
within budget or said not to be, resumable bit for bit."""
import dataclasses
import importlib.util
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jsnn.runs.segment
from jsnn.efficiency import measure, measure_dataset
from jsnn.models import SpikingResNet, get_model
from jsnn.parallel import put_batch
from jsnn.runs import energy as energy_run
from jsnn.runs import registry
from jsnn.runs.outputs import Outputs
from jsnn.runs.report import run_report
from jsnn.runs.sparse_training import sparse_optimizer
from jsnn.runs.workdir import RunMismatchError
from jsnn.sparsity import energy_training, gated_synops
from jsnn.ticket import load_ticket
from jsnn.training_rules import masks_in_use
from jsnn.variables import by_name, from_names, init_variables, kernels


def host(tree):
    return jax.tree.map(np.asarray, tree)


# -- channel groups ----------------------------------------------------------------------------------------


def test_channel_groups_of_vgg_and_resnet():
    digits = get_model("digits_cnn", 10, timesteps=2)
    groups = {g.producer: g for g in gated_synops.neuron_groups(digits.layers((8, 8, 1)))}
    assert set(groups) == {"conv0", "conv1", "conv2"}  # the classifier's outputs are never gated
    assert groups["conv0"].consumers == (gated_synops.Consumer("conv1", "conv", 1),)
    assert groups["conv1"].consumers == (gated_synops.Consumer("conv2", "conv", 1),)  # through the max pool
    # conv2 (128 channels) -> pool -> 2x2x128 -> flatten -> fc: every channel appears 2 * 2 times
    assert groups["conv2"].channels == 128 and groups["conv2"].consumers == (gated_synops.Consumer("fc", "linear", 4),)

    resnet = get_model("resnet19", 10, timesteps=2, width=0.125)
    groups = {g.producer: g for g in gated_synops.neuron_groups(resnet.layers((8, 8, 3)))}
    blocks = [f"stage{s}_block{b}" for s, n in enumerate((3, 3, 2)) for b in range(n)]
    # residual joins are not gated: the stem (feeding block 0's conv1 and its shortcut conv), each
    # block's conv1 (feeding conv2 only) and fc1 (feeding the classifier)
    assert set(groups) == {"stem", "fc1"} | {f"{b}/conv1" for b in blocks}
    assert {c.path for c in groups["stem"].consumers} == {"stage0_block0/conv1", "stage0_block0/shortcut"}
    assert groups["fc1"].consumers == (gated_synops.Consumer("fc2", "linear", 1),)
    assert all(groups[f"{b}/conv1"].consumers == (gated_synops.Consumer(f"{b}/conv2", "conv", 1),) for b in blocks)


def test_the_flatten_gate_is_the_gate_on_the_spikes():
    """The model's flatten (x.reshape(N, -1) of NHWC): gating channel c of the spikes equals scaling the
    fc rows ``(h * W + w) * C + c``, the tiled gate ``in_gate`` puts on the kernel."""
    rng = np.random.default_rng(0)
    spikes = (rng.random((5, 2, 2, 6)) < 0.4).astype(np.float32)
    kernel = rng.normal(size=(24, 3)).astype(np.float32)
    gate = rng.random(6).astype(np.float32)
    consumer = gated_synops.Consumer("fc", "linear", 4)
    direct = (spikes * gate).reshape(5, -1) @ kernel
    folded = spikes.reshape(5, -1) @ (kernel * np.asarray(gated_synops.in_gate(consumer, jnp.asarray(gate))))
    np.testing.assert_allclose(direct, folded, rtol=1e-6)


# -- the count against jsnn.efficiency ---------------------------------------------------------------------


def random_ticket(model, image_shape, seed, keep=0.6, keep_neurons=0.7):
    """Variables with random binary weight masks and random neuron gates folded in (fan-in and fan-out)."""
    rng = np.random.default_rng(seed)
    v = init_variables(model, jax.random.key(seed), (1,) + image_shape)
    groups = gated_synops.neuron_groups(model.layers(image_shape))
    weight_masks = {k: (rng.random(m.shape) < keep).astype(np.float32) for k, m in by_name(v.masks).items()}
    gates = {g.producer: jnp.asarray((rng.random(g.channels) < keep_neurons).astype(np.float32)) for g in groups}
    count = gated_synops.gated_masks({k: jnp.asarray(m) for k, m in weight_masks.items()}, gates, groups, fan_in=True)
    # BN statistics away from their init, so that the eval-mode network fires
    stats = jax.tree.map(lambda x: jnp.asarray(rng.uniform(0.2, 1.0, x.shape), jnp.float32) if x.ndim else x,
                         v.batch_stats)
    return v._replace(masks=from_names(count), batch_stats=stats), groups, count


@pytest.mark.parametrize("name,image_shape", [("digits_cnn", (8, 8, 1)), ("resnet", (8, 8, 3))])
def test_the_count_with_binary_gates_is_the_exact_synops_count(name, image_shape):
    """With 0/1 gates and the measured input spikes the differentiable count is jsnn.efficiency's SynOps,
    on the same batch; and the per-weight input-spike counts (its gradient) sum to it as well. The Res-SNN
    (stride-2 blocks with conv shortcuts, an identity skip, fc1 after the average pool: MACs, not counted)."""
    if name == "resnet":
        model = SpikingResNet(num_classes=10, timesteps=3, stem_features=4, stage_features=(4, 8),
                              stage_blocks=(2, 1), hidden_features=16)
    else:
        model = get_model(name, 10, timesteps=3)
    variables, groups, count = random_ticket(model, image_shape, seed=1)
    images = jax.random.normal(jax.random.key(2), (12,) + image_shape) * 2.0
    exact = measure(model, variables, np.asarray(images))["totals"]["synops"]  # an int, over the 12 images
    layers = tuple(model.layers(image_shape))

    @jax.jit
    def surrogate(variables, count, images):
        _, _, inputs = gated_synops.forward_with_inputs(model, variables, images, train=False)
        return gated_synops.synops(inputs, count, layers)

    assert 1000 < exact < 2**24  # float32 counts it exactly
    assert float(surrogate(variables, count, images)) == exact
    usage = gated_synops.weight_usage_fn(model, layers)(variables, images)
    named = by_name(variables.masks)
    assert sum(float(np.sum(np.asarray(u) * np.asarray(named[k]))) for k, u in usage.items()) == exact


def connections(inputs, kernel_shape, layer) -> float:
    """Connections driven by the nonzero inputs of a layer with every weight kept, counted here in
    NumPy: a linear layer's input drives its c_out outputs; a conv input pixel drives c_out times the
    output rows and columns whose window (stride, zero padding) covers it."""
    active = np.asarray(inputs) != 0
    if layer.kind != "conv":
        return float(active.sum() * kernel_shape[-1])
    kh, kw, _, c_out = kernel_shape
    s, pad = layer.stride, layer.padding

    def covering(size, k):  # per input index: the output indices whose window holds it
        outputs = (size + 2 * pad - k) // s + 1
        return np.array([sum(0 <= i + pad - o * s < k for o in range(outputs)) for i in range(size)])

    per_pixel = np.outer(covering(active.shape[-3], kh), covering(active.shape[-2], kw))
    return float(np.sum(active.sum(axis=-1).reshape(-1, *per_pixel.shape) * per_pixel) * c_out)


def test_the_count_is_linear_in_the_mask_and_its_gradient_reaches_the_logits():
    model = get_model("digits_cnn", 10, timesteps=2)
    layers = tuple(model.layers((8, 8, 1)))
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    groups = gated_synops.neuron_groups(layers)
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 1)) * 2.0
    _, _, inputs = jax.jit(lambda v, x: gated_synops.forward_with_inputs(model, v, x, train=False))(v, images)
    logits = gated_synops.init_logits(v.masks, groups, 0.1)

    @jax.jit
    def count(logits, beta):
        weight_gates, neuron_gates = gated_synops.soft_gates(logits, beta)
        return gated_synops.synops_per_image(inputs, gated_synops.gated_masks(weight_gates, neuron_gates, groups, True),
                                             layers, 4)

    g = jax.jit(jax.grad(count))(logits, 5.0)
    # d count / d m_w = beta sigma'(beta m) * (input spikes of that weight) * gates: every weight of a
    # counted layer that sees a spike has a positive gradient, the encoding conv (real input) none
    assert np.all(np.asarray(by_name(g["weights"])["conv0"]) == 0)
    assert np.all(np.asarray(by_name(g["weights"])["fc"]) >= 0) and np.any(np.asarray(by_name(g["weights"])["fc"]) > 0)
    assert all(np.any(np.asarray(x) > 0) for x in by_name(g["neurons"]).values())
    # all gates equal to s: the count is s^2 on the gated layers (weight gate times one neuron gate on
    # conv0, which is not counted; weight gate times in- and out-gates on conv1, conv2; fc: in-gate only)
    half = count(gated_synops.init_logits(v.masks, groups, 0.0), 1.0)
    ones = count(gated_synops.init_logits(v.masks, groups, 50.0), 1.0)
    described = {layer.name: layer for layer in layers}
    per_layer = {p: connections(x, by_name(v.masks)[p].shape, described[p]) / 4 for p, x in inputs.items()
                 if p != "conv0"}
    assert float(ones) == pytest.approx(sum(per_layer.values()), rel=1e-6)
    expected = per_layer["conv1"] / 8 + per_layer["conv2"] / 8 + per_layer["fc"] / 4
    assert float(half) == pytest.approx(expected, rel=1e-5)


def test_temperature_schedule():
    assert float(gated_synops.temperature(0, 100)) == pytest.approx(5.0)
    assert float(gated_synops.temperature(50, 100)) == pytest.approx(np.sqrt(5.0 * 1000.0), rel=1e-5)
    assert float(gated_synops.temperature(100, 100)) == pytest.approx(1000.0, rel=1e-5)
    assert float(gated_synops.temperature(400, 100)) == pytest.approx(1000.0, rel=1e-5)


# -- masks: dead channels, removed channels, the cut -------------------------------------------------------


def test_dead_fan_in_and_removed_channels():
    model = get_model("digits_cnn", 10, timesteps=2)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    groups = gated_synops.neuron_groups(model.layers((8, 8, 1)))
    named = {k: np.ones(m.shape, np.float32) for k, m in by_name(v.masks).items()}
    named["conv2"][:, :, 5, :] = 0  # conv1's channel 5: nothing reads it
    fc = named["fc"].reshape(4, 128, 10)
    fc[:, 7, :] = 0  # conv2's channel 7: nothing reads it ...
    named["fc"] = fc.reshape(512, 10)
    named["conv2"][:, :, :, 9] = 0  # ... and channel 9 has no fan-in but is read (a BN bias can drive it)
    cleaned = gated_synops.drop_dead_fan_in(named, groups)
    assert np.all(cleaned["conv1"][..., 5] == 0) and np.sum(cleaned["conv1"] == 0) == 9 * 32
    assert np.all(cleaned["conv2"][..., 7] == 0)
    assert np.sum(cleaned["conv2"] == 0) == 9 * 128 + 2 * 9 * 64 - 9 * 2  # in 5, out 7, out 9
    assert gated_synops.removed_channels(from_names(cleaned), model, (8, 8, 1)) == {"conv1": [5], "conv2": [7]}
    assert gated_synops.removed_channels(from_names(named), model, (8, 8, 1)) == {}


def test_cut_takes_each_layers_share_lowest_rank_first_and_never_a_protected_weight():
    masks = {"a": np.ones((2, 3), np.float32), "b": np.array([[1, 0, 1, 1]], np.float32)}
    rank = {"a": np.array([[5., 1., 3.], [0., 2., 9.]]), "b": np.array([[-1., -5., 4., 0.]])}
    usage = {"a": np.array([[1., 1., 1.], [0., 2., 1.]]), "b": np.array([[3., 3., 3., 3.]])}
    # kept usage: a 6, b 9 (b[0,1] is pruned); amount 5 -> shares a 2, b 3 (by hand)
    # a: a[1,0] reads nothing; a[0,1] (rank 1, usage 1), then a[1,1] (rank 2, usage 2): 3 >= 2
    # b: b[0,0] (rank -1, usage 3) covers 3
    out = gated_synops.cut(masks, rank, usage, 5.0)
    np.testing.assert_array_equal(out["a"], [[1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(out["b"], [[0, 0, 1, 1]])
    # a protected weight is skipped: b[0,3] (rank 0) goes instead of b[0,0]
    protected = {"b": np.array([[True, False, False, False]])}
    out = gated_synops.cut(masks, rank, usage, 5.0, protected)
    np.testing.assert_array_equal(out["b"], [[1, 0, 1, 0]])
    # however large the amount, the protected weight stays
    out = gated_synops.cut(masks, rank, usage, 1e9, protected)
    np.testing.assert_array_equal(out["b"], [[1, 0, 0, 0]])


def test_the_spine_keeps_every_counted_layer_connected_through_any_cut():
    """A cut asked to remove everything leaves one path through conv1, conv2 and fc that drop_dead_fan_in
    keeps (the spine's channels are read), and it is where the ranks say: the best-ranked channel and weight."""
    model = get_model("digits_cnn", 10, timesteps=2)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    groups = gated_synops.neuron_groups(model.layers((8, 8, 1)))
    rng = np.random.default_rng(0)
    named = {k: np.ones(m.shape, np.float32) for k, m in by_name(v.masks).items()}
    rank = {k: rng.normal(size=m.shape) for k, m in named.items()}
    spine = gated_synops.spine(rank, groups)
    assert all(int(m.sum()) == 1 for m in spine.values())
    # the kept channel of each group is the one with the best fan-in weight, by hand
    c0 = int(np.argmax(rank["conv0"].max(axis=(0, 1, 2))))
    c1 = int(np.argmax(rank["conv1"].max(axis=(0, 1, 2))))
    c2 = int(np.argmax(rank["conv2"].max(axis=(0, 1, 2))))
    assert spine["conv0"][..., c0].sum() == 1 and spine["conv1"][:, :, c0, c1].sum() == 1
    assert spine["conv2"][:, :, c1, c2].sum() == 1
    assert spine["fc"].reshape(4, -1, 10)[:, c2, :].sum() == 1
    # conv1's spine weight: the best-ranked among those reading c0 and writing c1
    allowed = np.full(rank["conv1"].shape, -np.inf)
    allowed[:, :, c0, c1] = rank["conv1"][:, :, c0, c1]
    assert spine["conv1"].reshape(-1)[np.argmax(allowed)]
    usage = {k: np.ones(m.shape) for k, m in named.items() if k != "conv0"}  # conv0 reads pixels: no SynOps
    cut = gated_synops.drop_dead_fan_in(gated_synops.cut(named, rank, usage, 1e12, spine), groups)
    for k in ("conv1", "conv2", "fc"):
        np.testing.assert_array_equal(cut[k] != 0, spine[k])
    assert np.all(cut["conv0"][..., c0] == 1) and cut["conv0"].sum() == 9  # only channel c0's fan-in is read
    # from an empty ticket (the search pruned everything) the spine is put back
    empty = {k: np.zeros_like(m) for k, m in named.items()}
    assert all(np.array_equal(gated_synops.with_spine(empty, spine)[k] != 0, spine[k]) for k in named)


def test_enforce_budget_says_when_no_connected_ticket_is_within_it():
    """Only the spine left and still over the budget: not met, the masks the spine (not an empty network)."""
    masks = {"a": np.ones((1, 4), np.float32), "b": np.ones((4, 1), np.float32)}
    rank = {"a": np.array([[0., 1., 2., 3.]]), "b": np.array([[3.], [2.], [1.], [0.]])}

    def usage(m):
        return {k: np.full(v.shape, 2.0) for k, v in m.items()}

    def measure(m):
        return float(sum(np.sum(usage(m)[k] * m[k]) for k in m))

    result = gated_synops.enforce_budget(masks, 3.0, rank, (), measure, usage)
    assert not result.met and result.measured[-1] == 4.0
    np.testing.assert_array_equal(result.masks["a"], [[0, 0, 0, 1]])
    np.testing.assert_array_equal(result.masks["b"], [[1], [0], [0], [0]])
    assert result.removed_weights == 6 and result.restored_weights == 0
    result = gated_synops.enforce_budget(masks, 4.0, rank, (), measure, usage)
    assert result.met and result.measured[-1] <= 4.0


def test_enforce_budget_measures_after_every_cut():
    """A fake network in which cutting a weight raises another's use (downstream firing changes): the
    loop measures again after each cut and ends only within the budget."""
    masks = {"a": np.ones((1, 4), np.float32)}
    rank = {"a": np.array([[0., 1., 2., 3.]])}

    def usage(m):
        u = np.array([[4., 4., 4., 4.]])
        return {"a": u + 3 * (m["a"][0, 0] == 0)}  # once weight 0 is gone the others fire more

    measured = []

    def measure(m):
        measured.append(float(np.sum(usage(m)["a"] * m["a"])))
        return measured[-1]

    result = gated_synops.enforce_budget(masks, 9.0, rank, (), measure, usage)
    assert result.measured[0] == 16 and result.measured[-1] <= 9.0 and len(result.measured) > 2
    assert result.measured == tuple(measured)
    np.testing.assert_array_equal(result.masks["a"], [[0, 0, 0, 1]])
    assert result.removed_weights == 3


# -- the methods in the jitted step ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(digits_sparse_training):
    return digits_sparse_training  # conftest.py: one Trainer for this file and its neighbour, compiled once


def batches(trainer, n):
    d = trainer.dataset
    for i in range(n):
        j = (i * 64) % (len(d.train_labels) - 63)
        yield put_batch(trainer.mesh, d.train_images[j:j + 64], d.train_labels[j:j + 64])


def search_state(config, trainer, target, weights_opt="sgd", lambda_init=0.1):
    layers = tuple(trainer.model.layers(trainer.dataset.image_shape))
    groups = gated_synops.neuron_groups(layers)
    rule = energy_training.EnergySearch(groups, layers, target, 6)
    trainer = energy_run.with_optimizer(trainer, energy_training.optimizer(
        sparse_optimizer(weights_opt, config, trainer.steps_per_epoch), 0.05, 0.05))
    v = init_variables(trainer.model, jax.random.key(0), (1,) + trainer.dataset.image_shape)
    scores = energy_training.search_scores(v.masks, groups, 0.1, lambda_init)
    return trainer, rule, groups, trainer.new_state(v, scores, rule, 0)


def test_the_dual_step_moves_lambda_toward_the_target_and_the_logits_learn(small):
    config, ds, base = small
    (images, labels), = batches(base, 1)
    trainer, rule, groups, state = search_state(config, base, 100.0)
    # the masks the host reads (the log's sparsity, the ticket): the rule's own, from its compiled program
    chex.assert_trees_all_equal(masks_in_use(rule, state.masks, state.scores),
                                rule.effective_masks(state.masks, state.scores))
    step = trainer.jitted_steps(rule)[0]
    # every neuron gate near 0 (logits -5, beta 5: sigma = 1.4e-11): S far under the target
    silent = state.replace(scores={**state.scores, "neurons": jax.tree.map(lambda x: x - 5.1,
                                                                           state.scores["neurons"])})
    silent = jax.tree.map(jnp.copy, silent)  # buffers of its own: the step donates its input state
    nus = []
    for start in (state, silent):
        before = host(start.scores)
        new, _ = step(start, images, labels, trainer.stop_flags())
        nus.append(float(new.scores["log_lambda"]) - float(before["log_lambda"]))
        changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["weights"]),
                                                             jax.tree.leaves(host(new.scores)["weights"]))]
        assert all(changed) or start is silent  # the logits learn (with every neuron silenced, nothing flows)
    # far over a target of 100 SynOps: the clipped gap is +1, nu grows by eta; far under it: shrinks by eta
    assert nus[0] == pytest.approx(0.05, rel=1e-5) and nus[1] == pytest.approx(-0.05, rel=1e-5)
    assert step._cache_size() == 1


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 5e-4), ("adam", 1e-3), ("adamw", 1e-2)])
def test_no_zombie_weights_through_the_switch_and_the_finetune(small, optimizer, weight_decay):
    """Every optimizer moment nonzero at every weight (as after a long search, but everywhere), random logits:
    after the switch and after every finetune step each pruned weight is exactly 0 and the logits are frozen."""
    config, ds, base = small
    config = dataclasses.replace(config, weight_decay=weight_decay, lr=0.05)
    trainer, rule, groups, state = search_state(config, base, 1e3, optimizer)
    rng = np.random.default_rng(0)
    state = state.replace(
        opt_state=jax.tree.map(lambda x: jnp.asarray(np.abs(rng.normal(size=x.shape)) + 0.1, x.dtype)
                               if jnp.issubdtype(x.dtype, jnp.floating) else x, state.opt_state),
        scores={**state.scores, **jax.tree.map(lambda x: jnp.asarray(rng.normal(0.5, 1.0, x.shape), x.dtype),
                                                {k: state.scores[k] for k in ("weights", "neurons")})})
    masks = gated_synops.ticket_masks(host(state.scores), host(state.masks), groups)
    assert gated_synops.removed_channels(masks, trainer.model, ds.image_shape)  # whole channels pruned too
    state = energy_run.switch_state(state, masks, trainer.mesh)
    finetune = energy_training.EnergyFinetune()
    step = trainer.jitted_steps(finetune)[0]
    scores = host(state.scores)
    for k, batch in enumerate([None] + list(batches(trainer, 3))):
        if batch is not None:
            before = host(state.weights)
            state, _ = step(state, *batch, trainer.stop_flags())
            moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                                jax.tree.leaves(host(state.weights)))]
            assert any(moved)  # the kept weights train
        now = host(state)
        for name, m in by_name(now.masks).items():
            w = by_name(kernels(now.weights))[name]
            assert np.all(w[m == 0] == 0), (optimizer, name, k)
        for a, b in zip(jax.tree.leaves(scores), jax.tree.leaves(now.scores)):
            np.testing.assert_array_equal(a, b)  # frozen in the finetune


# -- the run -----------------------------------------------------------------------------------------------


def test_run_meets_its_budget_and_resumes_bit_identical_across_the_switch(small, tmp_path, monkeypatch):
    config, ds, trainer = small
    options = energy_run.EnergyOptions(synops_budget=20000, finetune_epochs=1, mask_lr=0.05)
    outputs = Outputs(plots=False)
    straight = registry.run_method("energy", config, options, str(tmp_path / "a"), trainer=trainer, outputs=outputs)
    search, final = straight["runs"]
    assert straight["method"] == "energy" and (search["phase"], final["phase"]) == ("search", "finetune")
    # the guarantee, on the cost report's count over the training images (the test images' is the run's report)
    assert final["synops_measured_on"] == "train" and final["synops_per_image"] <= 20000
    ds_train = dataclasses.replace(ds, test_images=ds.train_images, test_labels=ds.train_labels)
    ticket = load_ticket(str(tmp_path / "a" / "ticket.npz"))
    assert measure_dataset(trainer.model, ticket.variables, ds_train, batch_size=64)["synops_per_image"] == \
        pytest.approx(final["synops_per_image"], rel=1e-6)
    assert final["within_budget"] and final["silent_layers"] == []
    assert search["efficiency"]["synops_per_image"] > 20000  # the short search alone does not get there ...
    assert final["repairs"]["switch"]["removed_weights"] > 0  # ... the layer-aware cut does
    for name, m in by_name(ticket.variables.masks).items():
        assert np.all(np.asarray(by_name(kernels(ticket.variables.weights))[name])[np.asarray(m) == 0] == 0)
    removed = gated_synops.removed_channels(ticket.variables.masks, trainer.model, ds.image_shape)
    assert {k: len(v) for k, v in removed.items()} == final["removed_channels"]
    assert final["disconnected_layers"] == []

    original = jsnn.runs.segment.save_checkpoint
    # killed inside the search, right after the switch (between the phases), inside the finetune
    for stop_at in ({"segment": 0, "epoch": 1, "batch": 1}, {"segment": 1, "epoch": 0, "batch": 0},
                    {"segment": 1, "epoch": 0, "batch": 1}):
        def crash(ckpt, step, state, extra, meta, stop_at=stop_at):
            original(ckpt, step, state, extra, meta)
            if meta["position"] == stop_at:
                raise KeyboardInterrupt

        monkeypatch.setattr(jsnn.runs.segment, "save_checkpoint", crash)
        workdir = str(tmp_path / f"b{stop_at['segment']}{stop_at['batch']}")
        with pytest.raises(KeyboardInterrupt):
            registry.run_method("energy", config, options, workdir, trainer=trainer, outputs=outputs)
        monkeypatch.setattr(jsnn.runs.segment, "save_checkpoint", original)
        resumed = registry.run_method("energy", config, options, workdir, trainer=trainer, outputs=outputs)
        assert resumed["runs"][1]["test_accuracy"] == final["test_accuracy"]
        assert resumed["runs"][1]["repairs"] == final["repairs"]
        other = load_ticket(os.path.join(workdir, "ticket.npz"))
        for x, y in zip(jax.tree.leaves(ticket.variables), jax.tree.leaves(other.variables), strict=True):
            np.testing.assert_array_equal(x, y)
    # the workdir is the run's: other settings are refused with one line naming them
    with pytest.raises(RunMismatchError, match="synops_budget"):
        registry.run_method("energy", config, dataclasses.replace(options, synops_budget=10000), workdir,
                            trainer=trainer, outputs=outputs)
    # the cost report of the finished run lists the final ticket's removed channels per layer (it measures
    # the whole digits test set, where the run measured this test's 64 images)
    report = run_report(str(tmp_path / "a"))
    row = [r for r in report["tickets"] if r["ticket"] == "ticket.npz"][0]
    assert {k: c["removed"] for k, c in row["removed_channels"].items() if c["removed"]} == final["removed_channels"]


def test_options_are_checked_with_one_line(small):
    config = small[0]
    with pytest.raises(ValueError, match="--synops-budget"):
        energy_run.EnergyOptions().resolve(config)
    with pytest.raises(ValueError, match="--finetune-epochs"):
        energy_run.EnergyOptions(synops_budget=10, finetune_epochs=config.epochs + 1).resolve(config)


TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train")


def test_the_program_dispatches_energy(monkeypatch):
    """``train/sparse_training.py --algorithm energy --synops-budget N`` runs jsnn.runs.energy with N."""
    sys.path.insert(0, TRAIN)  # the programs import their shared flags as `flags`
    spec = importlib.util.spec_from_file_location("train_program_sparse_training_energy",
                                                  os.path.join(TRAIN, "sparse_training.py"))
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    seen = {}

    def fake_run(config, options, workdir, **kw):
        seen.update(config=config, options=options, workdir=workdir)
        return {"label": "energy", "runs": [{}, {"synops_per_image": 90.0, "sparsity": 0.5, "removed_channels": {},
                                                 "test_accuracy": 0.9}]}

    monkeypatch.setitem(registry.METHODS, "energy", dataclasses.replace(registry.METHODS["energy"], run=fake_run))
    monkeypatch.setattr(sys, "argv", ["sparse_training.py", "--algorithm", "energy", "--synops-budget", "1e5",
                                      "--finetune-epochs", "3", "-T", "2", "--no-progress"])
    program.main()
    assert seen["options"] == energy_run.EnergyOptions(synops_budget=1e5, finetune_epochs=3).resolve(seen["config"])
    assert seen["config"].model == "digits_cnn" and seen["config"].timesteps == 2
    assert seen["workdir"] == os.path.join("runs", "energy_digits_100000")


def test_a_budget_that_would_empty_a_layer_gives_a_connected_ticket_or_says_none_is_within_it(small, tmp_path,
                                                                                                 capsys):
    # 1 SynOp per image: meeting it would empty the spiking layers. The spine keeps one path through every
    # counted layer; over the budget (or silent) the run says so in one line and records within_budget false.
    config, ds, trainer = small
    options = energy_run.EnergyOptions(synops_budget=1, finetune_epochs=1, mask_lr=0.05)
    out = registry.run_method("energy", config, options, str(tmp_path / "w"), trainer=trainer,
                              outputs=Outputs(plots=False, cost_report=False))
    final = out["runs"][1]
    masks = by_name(load_ticket(str(tmp_path / "w" / "ticket.npz")).variables.masks)
    assert all(np.asarray(m).any() for m in masks.values()) and final["disconnected_layers"] == []
    printed = capsys.readouterr().out
    if final["synops_per_image"] > 1 or final["silent_layers"]:
        assert not final["within_budget"] and "no connected ticket within the budget" in printed
    else:
        assert final["within_budget"]
    assert not final["within_budget"]  # this setup: the spine's path alone needs more than 1 SynOp
