"""NIR export / import (jsnn.interop): each mapping against hand-worked values or a NumPy
loop, and the round trips jsnn -> NIR -> jsnn / snnTorch / Norse spike for spike."""
import dataclasses
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
import torch

from jsnn import data as jdata
from jsnn.config import TrainConfig
from jsnn.interop import ExportError, fold_bn, from_nir, lif_from_nir, lif_to_nir, or_neuron, to_nir
from jsnn.interop.check import check_export
from jsnn.interop.compare import jsnn_layer_spikes
from jsnn.interop.nir_import import _lif
from jsnn.interop.torch_sims import norse_module, run_torch, snntorch_module
from jsnn.layers import BNConfig
from jsnn.models import SpikingResNet, build_model
from jsnn.neuron import LIFConfig, lif_time_major
from jsnn.pooling import max_pool_2x2
from jsnn.surrogate import make_spike_fn
from jsnn.ticket import save_ticket
from jsnn.variables import apply_model, init_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DT = 1e-4


# -- helpers ---------------------------------------------------------------------------------

def nir_lif_numpy(node, currents, dt=DT):
    """NIR's LIF stepped with forward Euler at dt (the importers' reading), float64:
    v += dt/tau (v_leak - v + r I); z = v > v_threshold; v = v_reset where z."""
    v = np.zeros(currents.shape[1:])
    out = []
    for i in currents:
        v = v + dt / node.tau * (node.v_leak - v + node.r * i)
        z = v > node.v_threshold
        v = np.where(z, node.v_reset, v)
        out.append(z.astype(np.float32))
    return np.stack(out)


def one_neuron_graph(lif_node, features=1):
    """Input -> Affine (identity) -> LIF -> Output over ``features`` neurons."""
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([features])}),
               "fc": nir.Affine(weight=np.eye(features, dtype=np.float32), bias=np.zeros(features, np.float32)),
               "lif": lif_node,
               "output": nir.Output(output_type={"output": np.array([features])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
        metadata={"dt": DT, "timesteps": 1})


def torch_step_spikes(net, currents, snntorch):
    """Feeds currents[t] ([T, n]) one step at a time; the output (spikes) per step."""
    out = []
    with torch.no_grad():
        if snntorch:
            from snntorch import utils
            utils.reset(net)
            for m in net.modules():
                if hasattr(m, "mem"):
                    m.mem = torch.zeros(1)
            for x in currents:
                z = net(torch.tensor(x[None], dtype=torch.float32))
                out.append((z[0] if isinstance(z, tuple) else z).numpy()[0])
        else:
            state = None
            for x in currents:
                z, state = net(torch.tensor(x[None], dtype=torch.float32), state)
                out.append(z.numpy()[0])
    return np.stack(out)


def calibrated(model, variables, images):
    """Running BN statistics = the statistics of ``images`` (one train-mode pass with momentum 1),
    so every layer's currents are normalised and the LIF layers spike."""
    cal = model.clone(bn=dataclasses.replace(model.bn, momentum=1.0))
    _, stats, _ = jax.jit(lambda v, x: apply_model(cal, v, x, train=True))(variables, jnp.asarray(images))
    return variables._replace(batch_stats=stats)


@pytest.fixture(scope="module")
def digits():
    return jdata.load_dataset("digits")


def normalized(ds, images):
    return np.asarray(jdata.normalize(images, ds.mean, ds.std))


@pytest.fixture(scope="module")
def tickets(digits):
    """ticket(digits, method, seed), each made once for the module."""
    made = {}

    def get(method, seed):
        if (method, seed) not in made:
            made[method, seed] = ticket(digits, method, seed)
        return made[method, seed]

    return get


@pytest.fixture(scope="module")
def resnet(digits):
    """A small Res-SNN (stride-2 block with a conv shortcut, a block with an identity skip,
    a second stage) with BN statistics from digits: 8x8 -> 4x4 -> 2x2."""
    model = SpikingResNet(num_classes=10, timesteps=3, stem_features=4, stage_features=(4, 8), stage_blocks=(2, 1),
                          hidden_features=16, bn=BNConfig(affine=True))
    v = jax.jit(lambda key: init_variables(model, key, (1, 8, 8, 1)))(jax.random.key(3))
    return model, calibrated(model, v, normalized(digits, digits.train_images[:128]))


def ticket(ds, method, seed):
    """A digits ticket as the programs save one: edge-popup (frozen Kaiming weights, random top-half
    masks, non-affine BN) or IMP-like (random affine BN, magnitude masks keeping 30%), BN running
    statistics from 256 training images."""
    config = TrainConfig(dataset="digits", timesteps=4).resolve(method)
    model = build_model(config, ds.num_classes)
    v = jax.jit(lambda key: init_variables(model, key, (1, 8, 8, 1)))(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    masks = jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < 0.5, jnp.float32), v.masks)
    if method == "imp":
        def magnitude(path, m):
            w = np.abs(np.asarray(v.weights[path[0].key]["kernel"]))
            return jnp.asarray(w > np.quantile(w, 0.7), jnp.float32)
        masks = jax.tree_util.tree_map_with_path(magnitude, v.masks)
        bn = jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.8, 1.5, p.shape), jnp.float32), v.bn)
        v = v._replace(bn=bn)
    v = v._replace(masks=masks)
    return config, model, calibrated(model, v, normalized(ds, ds.train_images[:256]))


# -- the mappings, against hand-worked values --------------------------------------------------

def test_lif_parameters_hand_worked():
    node = lif_to_nir((2,), decay=0.25, threshold=1.0, dt=DT)
    np.testing.assert_allclose(node.tau, [4e-4 / 3] * 2, rtol=1e-15)  # dt / (1 - 0.25)
    np.testing.assert_array_equal(node.r, [1.0, 1.0])
    np.testing.assert_array_equal(node.v_leak, [0.0, 0.0])
    np.testing.assert_allclose(node.v_threshold, [0.75, 0.75], rtol=1e-15)  # (1 - beta) theta
    np.testing.assert_array_equal(node.v_reset, [0.0, 0.0])
    # V_reset = 0.4 at beta 0.5: NIR's reset value decays once before the next input, so it is
    # (1 - beta) V_reset / beta = 0.4, and (1 - beta) * 2 = 1 for theta = 2
    node = lif_to_nir((1,), decay=0.5, threshold=2.0, reset_value=0.4, dt=DT)
    np.testing.assert_allclose(node.v_reset, [0.4], rtol=1e-15)
    np.testing.assert_allclose(node.v_threshold, [1.0], rtol=1e-15)
    back = lif_from_nir(node, DT)
    np.testing.assert_allclose(back["decay"], [0.5], rtol=1e-12)
    np.testing.assert_allclose(back["threshold"], [2.0], rtol=1e-12)
    np.testing.assert_allclose(back["reset_value"], [0.4], rtol=1e-12)
    np.testing.assert_array_equal(back["leak_current"], [0.0])


@pytest.mark.parametrize("decay,threshold,reset_value", [(0.25, 1.0, 0.0), (0.5, 0.7, 0.3), (0.9, 1.5, -0.2)])
def test_nir_lif_euler_reproduces_jsnn_lif(decay, threshold, reset_value):
    """NIR's Euler step (NumPy loop) on the exported parameters gives jsnn's spikes."""
    rng = np.random.default_rng(0)
    currents = rng.normal(0.5, 0.8, (12, 64, 5)).astype(np.float32)
    jsnn_spikes = np.asarray(lif_time_major(jnp.asarray(currents), LIFConfig(decay, threshold, reset_value)))
    node = lif_to_nir((64, 5), decay, threshold, reset_value, dt=DT)
    np.testing.assert_array_equal(nir_lif_numpy(node, currents.astype(np.float64)), jsnn_spikes)
    assert 0.05 < jsnn_spikes.mean() < 0.95


def test_hand_worked_spike_train_in_every_simulator():
    """beta 0.25, theta 1: currents 0.6, 0.6, 0.6, 1.2, 0.1 give U = 0.6, 0.75, 0.7875,
    1.396875 (spike, reset to 0), 0.1. The last neuron gets exactly 1.0 at t = 1: jsnn fires
    at U = theta, NIR (and both importers) only above it."""
    currents = np.array([[0.6, 1.0], [0.6, 0.0], [0.6, 0.0], [1.2, 0.0], [0.1, 0.0]], np.float32)
    want = np.array([[0, 1], [0, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    want_nir = want.copy()
    want_nir[0, 1] = 0  # U = theta exactly
    graph = one_neuron_graph(lif_to_nir((2,), 0.25, 1.0, dt=DT), features=2)
    assert np.array_equal(np.asarray(lif_time_major(jnp.asarray(currents[:, None]), LIFConfig())[:, 0]), want)
    assert np.array_equal(torch_step_spikes(snntorch_module(graph), currents, True), want_nir)
    assert np.array_equal(torch_step_spikes(norse_module(graph), currents, False), want_nir)
    # snnTorch rebuilt jsnn's beta and theta exactly; Norse steps v = (1 - beta) U
    leaky = [m for m in snntorch_module(graph).modules() if type(m).__name__ == "Leaky"][0]
    assert np.allclose(leaky.beta.numpy(), 0.25, rtol=0, atol=1e-7) and float(leaky.threshold) == 1.0
    # jsnn's own import of the graph runs either rule (its neuron driven step by step)
    for rule, expected in (("jsnn", want), ("nir", want_nir)):
        net, _ = from_nir(graph, timesteps=1, threshold_rule=rule)
        attrs = dict(next(a for name, kind, a in net.spec if name == "lif"))
        got = _lif(jnp.asarray(currents), len(currents), attrs, make_spike_fn("atan"), rule)
        assert np.array_equal(np.asarray(got), expected), rule


def test_fold_bn_hand_worked():
    # kernel [1, 1, 1, 2]: output channel 1's weight is pruned (0)
    kernel = np.array([[[[2.0, 0.0]]]])
    var = np.array([4.0, 1.0]) - 1e-5  # var + eps = 4, 1
    k, c = fold_bn(kernel, mean=np.array([1.0, 2.0]), var=var, epsilon=1e-5, scale=np.array([0.5, 2.0]),
                   bias=np.array([1.0, -1.0]))
    # a = scale / sqrt(var + eps) = [0.25, 2]; c = bias - mean * a = [0.75, -5]
    np.testing.assert_allclose(k, [[[[0.5, 0.0]]]], rtol=1e-6)
    assert k[0, 0, 0, 1] == 0.0  # a pruned weight stays exactly zero
    np.testing.assert_allclose(c, [0.75, -5.0], rtol=1e-6)
    # non-affine BN (edge-popup): a = 1 / sqrt(var + eps), c = -mean * a
    k, c = fold_bn(kernel, np.array([1.0, 2.0]), var, 1e-5)
    np.testing.assert_allclose(k, [[[[1.0, 0.0]]]], rtol=1e-6)
    np.testing.assert_allclose(c, [-0.5, -2.0], rtol=1e-6)


def pool_graph(shape):
    c, h, w = shape
    out = (c, h // 2, w // 2)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array(shape)}),
               "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
               "or": or_neuron(out, DT),
               "output": nir.Output(output_type={"output": np.array(out)})},
        edges=[("input", "pool"), ("pool", "or"), ("or", "output")], metadata={"dt": DT, "timesteps": 3})


def test_max_pool_is_sum_pool_plus_threshold_neuron():
    # hand-worked: five 2x2 windows holding 0, 1, 2, 3, 4 spikes -> OR = 0, 1, 1, 1, 1
    windows = np.zeros((1, 1, 2, 10), np.float32)
    for n in range(5):
        windows[0, 0, :, 2 * n:2 * n + 2] = np.array([1.0] * n + [0.0] * (4 - n)).reshape(2, 2)
    want = np.array([[[[0, 1, 1, 1, 1]]]], np.float32)
    assert np.array_equal(np.asarray(max_pool_2x2(jnp.asarray(windows.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2),
                          want)
    rng = np.random.default_rng(1)
    spikes = (rng.random((6, 3, 5, 7)) < 0.3).astype(np.float32)  # NCHW, odd sizes: the last row/column drop
    for x, ref in ((windows, want), (spikes, None)):
        if ref is None:
            ref = np.asarray(max_pool_2x2(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
        graph = pool_graph(x.shape[1:])
        net, _ = from_nir(graph)
        for rule in ("jsnn", "nir"):
            out = net.clone(threshold_rule=rule).apply({"weights": {}, "masks": {}},
                                                       jnp.asarray(x.transpose(0, 2, 3, 1)))
            assert np.array_equal(np.moveaxis(np.asarray(out), -1, 2), np.broadcast_to(ref, (3,) + ref.shape)), rule
        for make in (snntorch_module, norse_module):
            out, _ = run_torch(make(graph), x, 3)
            assert np.array_equal(out, np.broadcast_to(ref, out.shape)), make.__name__


def test_average_pool_scale(resnet):
    """AvgPool2d read by jsnn = the mean of each window (hand-worked), as snnTorch computes it;
    Res-SNN-19's global average pool exports as a SumPool2d with 1/(H W) in fc1's weight."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    want = np.array([[3.5, 5.5], [11.5, 13.5]], np.float32)  # e.g. (1 + 2 + 5 + 6) / 4
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
               "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
               "output": nir.Output(output_type={"output": np.array([1, 2, 2])})},
        edges=[("input", "pool"), ("pool", "output")], metadata={"dt": DT, "timesteps": 1})
    net, _ = from_nir(graph)
    got = np.asarray(net.apply({"weights": {}, "masks": {}}, jnp.asarray(x.transpose(0, 2, 3, 1))))
    np.testing.assert_array_equal(got[0, 0, :, :, 0], want)
    torch_out, _ = run_torch(snntorch_module(graph), x, 1)
    np.testing.assert_array_equal(torch_out[0, 0, 0], want)

    model, v = resnet
    g = to_nir(model, v, (8, 8, 1))  # the last stage's map is 2x2
    assert isinstance(g.nodes["avgpool"], nir.SumPool2d)
    np.testing.assert_array_equal(g.nodes["avgpool"].kernel_size, [2, 2])
    np.testing.assert_allclose(g.nodes["fc1"].weight, np.asarray(v.weights["fc1"]["kernel"]).T / 4, rtol=1e-7)


def test_flatten_order_and_pruned_weights_exactly_zero(tickets):
    config, model, v = tickets("edge_popup", 0)
    g = to_nir(model, v, (8, 8, 1))
    # conv weights: OIHW, weights x mask, BN folded per output channel; pruned stay exactly 0
    mask = np.asarray(v.masks["conv1"]["kernel"]).transpose(3, 2, 0, 1)
    assert np.all(g.nodes["conv1"].weight[mask == 0] == 0) and np.all(g.nodes["conv1"].weight[mask == 1] != 0)
    # the classifier's input is (H, W, C)-flattened in jsnn, (C, H, W) in NIR
    fc = np.asarray(v.weights["fc"]["kernel"] * v.masks["fc"]["kernel"])  # [2*2*128, 10]
    h, w, c = 2, 2, 128
    for (ci, hi, wi) in [(0, 0, 1), (5, 1, 0), (127, 1, 1)]:
        np.testing.assert_array_equal(g.nodes["fc"].weight[:, ci * h * w + hi * w + wi], fc[(hi * w + wi) * c + ci])


def test_import_snntorch_export_then_prune_in_jsnn():
    """A graph snnTorch itself exported (its Leaky: tau = dt/(1 - beta), r = tau/dt, no metadata)
    runs in jsnn with the same spikes, and jsnn's own pruning acts on the imported kernels."""
    import contextlib
    import io

    import snntorch as snn
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    from jsnn.sparsity.masks import prune_global, sparsity_of
    from jsnn.variables import kernels

    torch.manual_seed(0)
    leaky = dict(init_hidden=True, reset_mechanism="zero", reset_delay=False)  # NIR's reset (export drops others)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 6), snn.Leaky(beta=torch.full((6,), 0.5), threshold=torch.full((6,), 0.8), **leaky),
        torch.nn.Linear(6, 4), snn.Leaky(beta=torch.full((4,), 0.7), threshold=torch.full((4,), 1.0), **leaky))
    x = torch.randn(32, 8) * 2
    with contextlib.redirect_stdout(io.StringIO()):
        graph = export_to_nir(net, x[0])
    T = 6

    def snntorch_run():
        with torch.no_grad():
            snntorch.utils.reset(net)
            for m in net.modules():
                if hasattr(m, "mem"):
                    m.mem = torch.zeros(1)
            return np.stack([net(x).numpy() for _ in range(T)])

    model, v = from_nir(graph, timesteps=T, threshold_rule="nir")  # snnTorch fires at U > theta
    ref = snntorch_run()
    assert 0.02 < ref.mean() < 0.9
    out, _, _ = apply_model(model, v, jnp.asarray(x.numpy()), train=False)
    np.testing.assert_array_equal(np.asarray(out), ref)
    # prune half of the weights by magnitude with jsnn's IMP step, run both again
    scores = jax.tree.map(jnp.abs, kernels(v.weights))
    masks = prune_global(scores, v.masks, (8 * 6 + 6 * 4) // 2)
    assert sparsity_of(masks) == 0.5
    with torch.no_grad():
        for name, layer in (("0", net[0]), ("2", net[2])):
            layer.weight.mul_(torch.tensor(np.asarray(masks[name]["kernel"]).T))
    out, _, _ = apply_model(model, v._replace(masks=masks), jnp.asarray(x.numpy()), train=False)
    np.testing.assert_array_equal(np.asarray(out), snntorch_run())


def test_agreement_separates_origin_flips_from_their_consequences():
    """Two layers, T = 3, two images, two neurons; hand-placed disagreements."""
    from jsnn.interop.compare import agreement

    ref = {"a": np.zeros((3, 2, 2)), "b": np.zeros((3, 2, 2))}
    other = {k: v.copy() for k, v in ref.items()}
    u = {k: np.full(v.shape, 0.5) for k, v in ref.items()}
    other["a"][1, 0, 0] = 1  # image 0, t = 1: an origin (layer a's inputs are the image)
    u["a"][1, 0, 0] = 1.0 - 1e-7
    other["b"][1, 0, 1] = 1  # image 0, t = 1: follows from a's flip at the same step
    other["b"][2, 1, 0] = 1  # image 1, t = 2: layer a agrees for image 1, first flip of this neuron: an origin
    u["b"][2, 1, 0] = 1.0 + 3e-7
    other["b"][2, 1, 1] = 1  # image 1, t = 2, other neuron: an origin too (its inputs agree)
    u["b"][2, 1, 1] = 1.0
    other["b"][0, 0, 0] = 1  # image 0, t = 0, layer b: before a's flip at t = 1, so an origin
    u["b"][0, 0, 0] = 1.0 - 2e-7
    r = agreement(ref, other, u, threshold=1.0)
    assert r["spikes"] == 24 and r["agree"] == 19
    assert r["per_layer_agree"] == {"a": 11, "b": 8}
    np.testing.assert_allclose(r["origin_distance"], [0.0, 1e-7, 2e-7, 3e-7], atol=1e-12)
    assert r["consequences"] == 1


# -- round trips -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(digits, tickets, tmp_path_factory):
    """Both digits tickets, exported, written and read back."""
    out = {}
    for method, seed in (("edge_popup", 0), ("imp", 1)):
        config, model, v = tickets(method, seed)
        path = str(tmp_path_factory.mktemp(method) / "ticket.nir")
        nir.write(path, to_nir(model, v, (8, 8, 1), digits.mean, digits.std))
        out[method] = (model, v, nir.read(path))
    return out


@pytest.mark.parametrize("method", ["edge_popup", "imp"])
def test_round_trips_on_digits_test_set(exported, digits, method):
    """jsnn -> NIR file -> jsnn, snnTorch and Norse on the 360 digits test images, T = 4."""
    model, v, graph = exported[method]
    report = check_export(model, v, graph, digits, ["jsnn", "snntorch", "norse"], batch_size=360)
    assert report["lif_layers"] == ["conv0_lif", "conv1_lif", "conv2_lif"]
    for sim, r in report["simulators"].items():
        assert r["images"] == 360 and r["spikes"] == 360 * 4 * (32 * 64 + 64 * 64 + 128 * 16), sim
        assert r["prediction_agreement"] == 1.0, (sim, r)
        assert r["spike_agreement"] >= 0.999, (sim, r)
        # every disagreement starts where jsnn's U lies within float rounding of the threshold
        if r["spikes_agree"] < r["spikes"]:
            assert r["origin_flips"] > 0 and r["origin_max_distance_to_threshold"] < 1e-5, (sim, r)
        if r["spikes_agree"] == r["spikes"]:  # same spikes: outputs differ only by rounding
            assert r["max_output_difference"] < 1e-4, (sim, r)
    # the layers really spike (the comparison is not between silent networks)
    images = normalized(digits, digits.test_images[:64])
    _, spikes, _ = jsnn_layer_spikes(model, v, images, report["lif_layers"])
    for name, s in spikes.items():
        assert 0.01 < s.mean() < 0.9, (name, s.mean())


def test_graph_round_trip_is_exact(exported):
    """from_nir reads back exactly the arrays the file holds, and the imported network runs
    through jsnn's apply_model like any model, with masks = (weight != 0)."""
    model, v, graph = exported["imp"]
    net, nv = from_nir(graph)
    np.testing.assert_array_equal(np.asarray(nv.weights["conv0"]["kernel"]).transpose(3, 2, 0, 1),
                                  graph.nodes["conv0"].weight)
    np.testing.assert_array_equal(np.asarray(nv.weights["fc"]["kernel"]).T, graph.nodes["fc"].weight)
    assert np.array_equal(np.asarray(nv.masks["conv1"]["kernel"]), np.asarray(nv.weights["conv1"]["kernel"]) != 0)
    kept = np.mean(np.asarray(nv.masks["conv1"]["kernel"]))
    assert 0.25 < kept < 0.35  # IMP-like ticket keeps 30%
    x = jnp.zeros((2, 8, 8, 1))
    logits, _, _ = apply_model(net, nv, x, train=False)
    assert logits.shape == (4, 2, 10)


def test_resnet_exports_with_sum_nodes(digits, resnet):
    model, v = resnet
    graph = to_nir(model, v, (8, 8, 1))
    # the identity skip of stage0_block1 and the conv shortcut of stage0_block0 are summed into the block's LIF
    assert [s for s, d in graph.edges if d == "stage0_block1_lif"] == ["stage0_block1_conv2", "stage0_block0_lif"]
    assert [s for s, d in graph.edges if d == "stage0_block0_lif"] == ["stage0_block0_conv2",
                                                                        "stage0_block0_shortcut"]
    report = check_export(model, v, graph, digits, ["jsnn", "snntorch"], batch_size=64, max_images=64)
    assert report["images"] == 64
    for sim, r in report["simulators"].items():
        assert r["prediction_agreement"] == 1.0 and r["spike_agreement"] >= 0.999, (sim, r)
        assert r["per_layer"]["stage0_block0_lif"] >= 0.999  # the block whose join sums conv2 and the shortcut
    # Norse 1.1's depth-first executor would compute the join before the conv shortcut: refused
    with pytest.raises(ExportError, match="Norse 1.1 cannot run this graph.*stage0_block0_shortcut"):
        norse_module(graph)


# -- what cannot be exported, and the program's errors -----------------------------------------

def test_soft_reset_and_unsupported_graphs_are_refused():
    model = build_model(TrainConfig(dataset="digits", timesteps=2, reset="soft").resolve("dense"), 10)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    with pytest.raises(ExportError, match="soft"):
        to_nir(model, v, (8, 8, 1))
    # on request, exported with NIR's reset instead (a different neuron), and said so
    g = to_nir(model, v, (8, 8, 1), soft_reset_as_hard=True)
    assert "exported as NIR's reset" in g.metadata["jsnn_reset"]
    np.testing.assert_allclose(g.nodes["conv0_lif"].v_threshold, 0.75)  # (1 - beta) theta
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                            "threshold": nir.Threshold(threshold=np.ones(2)),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "threshold"), ("threshold", "output")], metadata={"timesteps": 1})
    with pytest.raises(ExportError, match="Threshold"):
        from_nir(g)
    # images of the wrong shape, a graph without its Output
    net, v = from_nir(pool_graph((2, 4, 4)))
    with pytest.raises(ValueError, match=r"input is \(4, 4, 2\)"):
        net.apply({"weights": {}, "masks": {}}, jnp.zeros((1, 4, 4, 3)))
    g = pool_graph((2, 4, 4))
    g.nodes.pop("output")
    g.edges = [e for e in g.edges if e[1] != "output"]
    with pytest.raises(ExportError, match="exactly one Output"):
        from_nir(g)


def load_export_program():
    sys.path.insert(0, os.path.join(ROOT, "train"))
    spec = importlib.util.spec_from_file_location("export_program", os.path.join(ROOT, "train", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_program(monkeypatch, capsys, *argv):
    program = load_export_program()
    monkeypatch.setattr(sys, "argv", ["export.py", *argv])
    code = 0
    try:
        program.run_cleanly(program.main)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


def test_export_program(tmp_path, monkeypatch, capsys, tickets):
    config, model, v = tickets("imp", 1)
    workdir = tmp_path / "imp"
    save_ticket(str(workdir / "tickets" / "round_01.npz"), config, 10, v, {"method": "imp", "round": 1})
    code, out = run_program(monkeypatch, capsys, "--workdir", str(workdir), "--round", "1", "--check", "jsnn")
    assert code == 0, out.err
    written = workdir / "tickets" / "round_01.nir"
    assert written.is_file() and f"{written.stat().st_size / 1024:.1f} KiB" in out.err + out.out
    import json
    report = json.loads((workdir / "tickets" / "round_01.nir.check.json").read_text())
    assert report["simulators"]["jsnn"]["prediction_agreement"] == 1.0
    assert report["sizes"]["nir_bytes"] == written.stat().st_size

    for argv, says in ((["--workdir", str(tmp_path / "nowhere")], "does not exist"),
                       (["--workdir", str(workdir), "--round", "7"], "no ticket"),
                       (["--workdir", str(workdir), "--check", "lava"], "choose from")):
        code, out = run_program(monkeypatch, capsys, *argv)
        lines = [line for line in out.err.splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], out.err
