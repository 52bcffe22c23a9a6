"""The field's testbed networks (SEW-ResNet-18/34, VGGSNN, Shi et al.'s CIFAR-10 net) pass the checks the
existing models do: the description against the module's variables and forward pass, sizes against the
published networks counted by hand, the cost report against NumPy loops, NIR export spike for spike in
snnTorch, and energy pruning's neuron groups by hand. The energy method's training step runs on each of them in
tests/test_recipes.py (Shi et al.'s recipes); the other methods' steps read nothing of a model but its
variables and its description (edge-popup's encoding and classifier layers, SF's BN at each kernel's path),
which the checks here cover. Every method runs to its end on these networks in benchmarks/testbed_methods.py
(minutes: outside the suite).

Resume is not tested per model here: checkpointing and the interrupt-and-rerun path never look at the model
(tests/test_method_tickets.py, tests/test_signal_phases.py and tests/test_reliability.py cover it)."""
import types

import jax
import nir
import numpy as np
import pytest

from jsnn.efficiency import counting as E
from jsnn.interop import ExportError, to_nir
from jsnn.interop.check import check_export
from jsnn.models import get_model
from jsnn.neuron import LIFConfig
from jsnn.sparsity import gated_synops
from jsnn.variables import Variables, init_variables
from tests.test_efficiency import _capture, _lif_loop, _lookup, _pairs_loop
from tests.test_layer_description import _observed_shapes, _variable_shapes

# tiny versions: every kind of layer the full networks have, at a sliver of their width
TINY = {
    "sew_resnet18": (lambda: get_model("sew_resnet18", 10, timesteps=2, width=1 / 16), (32, 32, 3)),
    "sew_resnet34": (lambda: get_model("sew_resnet34", 10, timesteps=2, width=1 / 16), (16, 16, 3)),
    "vggsnn": (lambda: get_model("vggsnn", 10, timesteps=2, width=1 / 16), (2, 16, 16, 2)),  # event frames
    "cifar10net": (lambda: get_model("cifar10net", 10, timesteps=2, width=1 / 32), (16, 16, 3)),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_description_matches_the_module(name):
    build, image_shape = TINY[name]
    model = build()
    layers = model.layers(image_shape)
    shapes = _variable_shapes(model, image_shape)
    with_kernels = [layer for layer in layers if layer.kind in ("conv", "linear")]
    assert {layer.name: layer.kernel_shape for layer in with_kernels} == {
        p[: -len("/kernel")]: s for p, s in shapes["weights"].items() if p.endswith("/kernel")}
    for layer in with_kernels:
        assert (f"{layer.name}/bias" in shapes["weights"]) == layer.bias
    connections, neurons, logits_shape = _observed_shapes(model, image_shape)
    assert connections == [(x.name, x.in_shape, x.out_shape) for x in layers if x.kind in ("conv", "linear")]
    assert neurons == [(x.inputs[0], x.out_shape, x.out_shape) for x in layers if x.kind == "lif"]
    assert logits_shape == (model.timesteps, 2, 10)
    shape = {}
    for layer in layers:
        assert all(shape[i] == layer.in_shape for i in layer.inputs), layer
        shape[layer.name] = layer.out_shape


def _parameters(model, image_shape):
    v = jax.eval_shape(lambda key: init_variables(model, key, (1,) + image_shape), jax.random.key(0))
    return sum(int(np.prod(x.shape)) for tree in (v.weights, v.bn) for x in jax.tree.leaves(tree))


def test_sizes_are_the_published_networks():
    # SEW adds no parameter to ResNet: torchvision's ResNet-18 / -34 (1000 classes) hold 11,689,512 and
    # 21,797,672 (conv kernels + BN scale and bias + fc weight and bias). By hand, ResNet-18: stem 7*7*3*64;
    # stage widths 64..512, 2 blocks of two 3x3 convs each, a 1x1 downsample at stages 2-4; 4800 BN channels
    convs18 = (7 * 7 * 3 * 64 + 4 * 9 * 64 * 64 + (9 * 64 * 128 + 3 * 9 * 128 * 128 + 64 * 128)
               + (9 * 128 * 256 + 3 * 9 * 256 * 256 + 128 * 256) + (9 * 256 * 512 + 3 * 9 * 512 * 512 + 256 * 512))
    bn18 = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    assert convs18 + 2 * bn18 + 512 * 1000 + 1000 == 11_689_512
    assert _parameters(get_model("sew_resnet18", 1000), (32, 32, 3)) == 11_689_512
    assert _parameters(get_model("sew_resnet34", 1000), (32, 32, 3)) == 21_797_672
    layers = {x.name: x for x in get_model("sew_resnet18", 1000).layers((224, 224, 3))}
    assert layers["stem"].out_shape == (112, 112, 64) and layers["maxpool"].out_shape == (56, 56, 64)
    assert layers["stage3_block1/add"].out_shape == (7, 7, 512)
    assert layers["stage3_block1/add"].inputs == ("stage3_block1/conv2_lif", "stage3_block0/add")
    assert layers["stage1_block0/add"].inputs == ("stage1_block0/conv2_lif", "stage1_block0/downsample_lif")
    # TET's classifier: Linear(512 * 3 * 3, 10) at 48 x 48; Shi et al.'s fc1: 256 * 8 * 8 -> 128 * 4 * 4
    assert {x.name: x for x in get_model("vggsnn", 10, timesteps=10).layers((10, 48, 48, 2))}["fc"].in_shape == (4608,)
    shi = {x.name: x for x in get_model("cifar10net", 10, timesteps=8).layers((32, 32, 3))}
    assert (shi["fc0"].in_shape, shi["fc0"].out_shape, shi["fc0"].bias) == ((16384,), (2048,), False)
    assert [x for x in shi if x.startswith("conv") and not x.endswith("_lif")] == [f"conv{i}" for i in range(6)]


def _ticket(model, shape, seed):
    v = init_variables(model, jax.random.key(seed), (1,) + shape)
    rng = np.random.default_rng(seed)
    masks = jax.tree.map(lambda m: (rng.random(m.shape) < 0.6).astype(np.float32), v.masks)
    stats = jax.tree.map(lambda s: np.asarray(s) * 0.3, v.batch_stats)  # moderate firing
    return Variables(v.weights, masks, v.bn, stats)


def _inputs(shape, n, seed):
    rng = np.random.default_rng(seed)
    if len(shape) == 4:  # event counts 0..2
        return rng.integers(0, 3, (n,) + shape).astype(np.float32)
    return rng.normal(size=(n,) + shape).astype(np.float32)


@pytest.mark.parametrize("name", ["sew_resnet18", "vggsnn", "cifar10net"])
def test_cost_report_matches_numpy_loops(name):
    build, shape = TINY[name]
    model = build()
    T, n = model.timesteps, 3
    variables = _ticket(model, shape, 1)
    images = _inputs(shape, n, 2)
    r = E.measure(model, variables, images, batch_size=n)  # one batch: a call is one timestep of all 3
    seen = _capture(model, variables, images)
    by_name = {row["layer"]: row for row in r["layers"]}
    assert list(by_name) == list(seen)
    mixed = 0
    for path, (x, _, module) in seen.items():
        keep = (np.asarray(_lookup(variables.weights, path)["kernel"])
                * np.asarray(_lookup(variables.masks, path)["kernel"])) != 0
        acs = macs = 0
        calls = [x] if len(x) == n else np.split(x, T)  # the encoding conv sees the images once
        for xt in calls:  # NeuroBench's rule per call: all inputs in {0, 1} -> ACs, else MACs
            if keep.ndim == 4:
                pairs = _pairs_loop(xt, keep, module.stride, module.kernel_size // 2)
            else:
                pairs = int(((xt != 0).astype(np.int64) @ keep.astype(np.int64)).sum())
            if np.all(np.isin(xt, (0.0, 1.0))):
                acs += pairs
            else:
                macs += pairs
        assert (by_name[path]["acs"], by_name[path]["macs"]) == (acs, macs), path
        mixed += acs > 0 and macs > 0
    # the LIF layers: each is fed by one conv / linear layer (SEW joins come after the neurons)
    for row in r["neurons"]:
        out = seen[row["lif_after"]][1]
        if len(out) == n:  # the encoding conv's current repeats over the timesteps
            out = np.broadcast_to(out, (T,) + out.shape).reshape((-1,) + out.shape[1:])
        spikes, updates = _lif_loop(out, T)
        assert row["spikes"] == spikes and row["membrane_updates_per_image"] * n == updates, row["lif_after"]
    assert 0.02 < r["firing_rate"] < 0.98
    if name == "sew_resnet18":  # 32 -> stem 16 -> max pool 8 -> stages 8, 4, 2, 1 at widths 4, 8, 16, 32
        # 3x3 stride-2 pool, padding 1, on 16: per axis the 8 windows hold 2 + 7 * 3 = 23 values inside the map
        assert r["pool_ops_per_image"] == ((23 * 23 - 8 * 8) * 4 + 32) * T  # + the global pool over 1x1x32
        assert r["residual_adds_per_image"] == 2 * (8 * 8 * 4 + 4 * 4 * 8 + 2 * 2 * 16 + 32) * T
        # the joins' spike counts reach the next block: MACs at calls where a count exceeds 1
        assert by_name["stage1_block0/conv1"]["macs"] > 0 and by_name["stage0_block0/conv2"]["macs"] == 0
    elif name == "cifar10net":  # 2x2 max pools after conv3 and conv6 (16 -> 8 -> 4) over 256 / 32 = 8 channels:
        assert r["pool_ops_per_image"] == (8 * 8 + 4 * 4) * 3 * 8 * T  # 3 comparisons per output
    else:  # four 2x2 average pools (16 -> 8 -> 4 -> 2 -> 1): one accumulate per value summed
        assert r["pool_ops_per_image"] == (16 * 16 * 8 + 8 * 8 * 16 + 4 * 4 * 32 + 2 * 2 * 32) * T
        assert by_name["conv2"]["input"] != "spikes"  # after an average pool: 0, 1/4, ..., 1
    assert r["layers"][0]["input"] == "real"


@pytest.mark.parametrize("name", ["sew_resnet18", "vggsnn", "cifar10net"])
def test_nir_export_runs_spike_for_spike_in_snntorch(name):
    build, shape = TINY[name]
    model = build()
    v = _ticket(model, shape, 3)
    graph = to_nir(model, v, shape)
    images = (np.random.default_rng(4).integers(0, 3 if len(shape) == 4 else 256, (4,) + shape)).astype(np.uint8)
    c = shape[-1]
    data = types.SimpleNamespace(test_images=images, test_labels=np.arange(4) % 10, mean=np.full(c, 1.0 if
                                 len(shape) == 4 else 127.0), std=np.full(c, 1.0 if len(shape) == 4 else 60.0))
    report = check_export(model, v, graph, data, ["snntorch"], batch_size=4)
    r = report["simulators"]["snntorch"]
    assert r["spike_agreement"] == 1.0 and r["prediction_agreement"] == 1.0, r
    assert r["spikes_agree"] > 0.05 * r["spikes"]  # layers fire: the agreement is not over silence
    if name == "sew_resnet18":
        # the padded 3x3 stride-2 pool: its window count as a channel-diagonal conv, then the OR neuron
        pool = graph.nodes["maxpool"]
        assert isinstance(pool, nir.Conv2d) and tuple(pool.padding) == (1, 1) and tuple(pool.stride) == (2, 2)
        assert pool.weight.sum() == 4 * 9 and np.all(pool.weight[0, 1] == 0)
        # an ADD join has no node: its readers take an edge from every spike map it sums
        into = sorted(s for s, d in graph.edges if d == "stage1_block0_conv1")
        assert into == ["maxpool_or", "stage0_block0_conv2_lif", "stage0_block1_conv2_lif"]
        into = sorted(s for s, d in graph.edges if d == "stage2_block0_conv1")
        assert into == ["stage1_block0_conv2_lif", "stage1_block0_downsample_lif", "stage1_block1_conv2_lif"]
    if name == "vggsnn":  # a 2x2 average pool: a SumPool2d, its 1/4 in the next conv's kernel
        assert isinstance(graph.nodes["pool0"], nir.SumPool2d)


def test_nir_export_refuses_what_it_cannot_run():
    model = get_model("sew_resnet18", 10, timesteps=2, width=1 / 16, lif=LIFConfig(decay=1.0))
    v = init_variables(model, jax.random.key(0), (1, 16, 16, 3))
    with pytest.raises(ExportError, match="decay 1 is an IF neuron"):  # SEW's ImageNet neuron, in one line
        to_nir(model, v, (16, 16, 3))


def test_energy_neuron_groups_by_hand():
    """Energy pruning gates the channels whose spikes reach only conv / linear layers: in SEW-ResNet only
    each block's conv1 (conv2's and the downsample's spikes enter a join, the stem's reach the first join
    through the max pool); every conv of the plain stacks and Shi et al.'s fc0."""
    model, shape = TINY["sew_resnet18"][0](), TINY["sew_resnet18"][1]
    groups = gated_synops.neuron_groups(model.layers(shape))
    assert [g.producer for g in groups] == [f"stage{s}_block{b}/conv1" for s in range(4) for b in range(2)]
    assert groups[0].consumers == (gated_synops.Consumer("stage0_block0/conv2", "conv"),)
    model, shape = TINY["vggsnn"][0](), TINY["vggsnn"][1]
    groups = gated_synops.neuron_groups(model.layers(shape))
    assert [g.producer for g in groups] == [f"conv{i}" for i in range(8)]
    assert groups[-1].consumers == (gated_synops.Consumer("fc", "linear", 1),)  # 1x1 map after the last pool
    model, shape = TINY["cifar10net"][0](), TINY["cifar10net"][1]
    groups = gated_synops.neuron_groups(model.layers(shape))
    assert [g.producer for g in groups] == [f"conv{i}" for i in range(6)] + ["fc0"]
    assert groups[5].consumers == (gated_synops.Consumer("fc0", "linear", 4 * 4),)  # 16 -> 8 -> 4 after two pools
