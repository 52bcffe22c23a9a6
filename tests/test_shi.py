"""Shi et al.'s method as jsnn runs it (jsnn/sparsity/connection_penalty.py, jsnn/runs/shi.py): where the masks sit in a
network and their usage constants by hand, the paper's connection count against a NumPy loop, the per-position gates
counted exactly by the cost report (against a NumPy loop over the model's own LIF spikes) and carried into NIR (run in
snnTorch against jsnn). A run of the method: tests/test_registry.py (``shi_case``, ``check_shi_ticket``)."""
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data as jdata
from jsnn.efficiency import measure, measure_synops
from jsnn.interop import from_nir, to_nir
from jsnn.layers import BNConfig
from jsnn.models import get_model, observe
from jsnn.objective import predictions
from jsnn.runs import shi as shi_run
from jsnn.sparsity import connection_penalty
from jsnn.variables import apply_model, by_name, from_names, init_variables

ROOT = Path(__file__).resolve().parent.parent


def tiny(timesteps=2):
    """digits_cnn at width 1/8: conv0 1 -> 4 (8x8), conv1 4 -> 8 (8x8), pool, conv2 8 -> 16 (4x4), pool, fc 64 -> 10."""
    return get_model("digits_cnn", 10, timesteps=timesteps, width=0.125, bn=BNConfig(affine=True))


def test_masks_and_usage_constants_of_a_network_by_hand():
    layers = tiny().layers((8, 8, 1))
    # the LIF after every conv but the first has per-position masks; none after the classifier
    assert connection_penalty.gated_producers(layers) == {"conv1": (8, 8, 8), "conv2": (4, 4, 16)}
    c_w, c_n = connection_penalty.usage_constants(connection_penalty.blocks_of(layers))
    assert c_w == {"conv0": 64.0, "conv1": 64.0, "conv2": 16.0, "fc": 1.0}  # output positions per weight
    # fan-out of the layer reading the spikes (through the pools: their calc_c ignores pooling)
    assert c_n == {"conv0": 8 * 9, "conv1": 16 * 9, "conv2": 10, "fc": 0.0}
    masks = from_names({x.name: np.ones(x.kernel_shape, np.float32) for x in layers if x.kind in ("conv", "linear")})
    logits = connection_penalty.init_logits(masks, layers)
    assert {k: m.shape for k, m in by_name(logits["neurons"]).items()} == {"conv1": (8, 8, 8), "conv2": (4, 4, 16)}
    # Shi et al.'s init: every logit 0, so sigma 0.5 while searching and nothing kept once fixed
    b = connection_penalty.binary_variables({}, masks, logits, {}, {})
    assert all(not np.any(m) for m in jax.tree.leaves(b.masks)) and all(not np.any(g) for g in jax.tree.leaves(b.gates))


def random_ticket(layers, like_masks, seed=0, keep=0.6, gate_keep=0.5):
    rng = np.random.default_rng(seed)
    kept = {k: (rng.random(m.shape) < keep).astype(np.float32) for k, m in sorted(like_masks.items())}
    gates = {k: (rng.random(shape) < gate_keep).astype(np.float32)
             for k, shape in connection_penalty.gated_producers(layers).items()}
    return kept, gates


def numpy_connections(kept, gates):
    """The reference code's ``connects()`` on the tiny network, written out position by position."""
    def conv(a, k):  # 3x3, stride 1, padding 1: incoming connection count of every output neuron
        h, w, _ = a.shape
        p = np.pad(a, ((1, 1), (1, 1), (0, 0)))
        out = np.zeros((h, w, k.shape[-1]))
        for i in range(h):
            for j in range(w):
                for di in range(3):
                    for dj in range(3):
                        out[i, j] += p[i + di, j + dj] @ k[di, dj]
        return out

    def pool(a):
        h, w, c = a.shape
        return a.reshape(h // 2, 2, w // 2, 2, c).max((1, 3))

    conn = total = 0.0
    a, d = np.ones((8, 8, 1)), np.ones((8, 8, 1))
    for name, pooled in (("conv0", False), ("conv1", True), ("conv2", True)):
        s, t = conv(a, kept[name]), conv(d, np.ones_like(kept[name]))
        s = s * gates.get(name, 1.0)
        conn, total = conn + s.sum(), total + t.sum()
        a, d = (s != 0) * gates.get(name, 1.0), np.ones_like(s)
        if pooled:
            a, d = pool(a), pool(d)
    s = a.reshape(-1) @ kept["fc"]
    return conn + s.sum(), total + d.size * 10


def test_connections_match_a_numpy_loop_of_the_reference_count():
    layers = tiny().layers((8, 8, 1))
    kernels = {x.name: np.ones(x.kernel_shape) for x in layers if x.kind in ("conv", "linear")}
    kept, gates = random_ticket(layers, kernels)
    got = connection_penalty.connections(layers, kept, gates)
    assert got == pytest.approx(numpy_connections(kept, gates), rel=1e-6)
    # every weight and neuron kept: the dense count, which is also the second number
    ones = {k: np.ones_like(m) for k, m in kept.items()}
    assert connection_penalty.connections(layers, ones) == pytest.approx((got[1], got[1]))
    assert got[0] < got[1]


@pytest.fixture(scope="module")
def digits():
    return jdata.load_dataset("digits")


@pytest.fixture(scope="module")
def gated(digits):
    """(the tiny network at T = 2, a ticket of it: random kept weights, random per-position gates). At its initial
    BN statistics every layer spikes on digits (conv2 the least, about 1 % of its neuron-steps)."""
    model = tiny(timesteps=2)
    layers = model.layers((8, 8, 1))
    v = init_variables(model, jax.random.key(1), (1, 8, 8, 1))
    kept, gates = random_ticket(layers, by_name(v.masks), 1)
    return model, v._replace(masks=from_names({k: jnp.asarray(m) for k, m in kept.items()}),
                             gates=from_names({k: jnp.asarray(g) for k, g in gates.items()}, leaf="neurons"))


def numpy_pairs(x, kept, conv: bool):
    """(nonzero input, kept weight) pairs of one layer over every row of ``x``, as loops over positions and taps."""
    if not conv:
        return int(sum((row != 0).astype(np.int64) @ (kept != 0).sum(1) for row in x))
    fan_out = (kept != 0).sum(-1)  # [3, 3, C_in]: kept weights leaving each tap
    total = 0
    for row in x:
        p = np.pad(row != 0, ((1, 1), (1, 1), (0, 0)))
        h, w, _ = row.shape
        for i in range(h):
            for j in range(w):
                total += int(np.sum(p[i:i + 3, j:j + 3] * fan_out))
    return total


def test_the_cost_report_counts_gated_neurons_exactly(digits, gated):
    model, v = gated
    images = jnp.asarray(jdata.normalize(digits.test_images[:6], digits.mean, digits.std))
    report = measure(model, v, images)
    # the reference: each LIF layer's own spikes in the gated run (observe recomputes them from the potentials,
    # before the gate), gated, pooled and counted in NumPy
    own = jax.jit(lambda v, x: {k: c.spikes for k, c in observe(model, v, x)[1].neurons.items()})(v, images)
    spikes = {k: np.asarray(s).reshape((-1,) + s.shape[2:]) for k, s in own.items()}
    gates = {k: np.asarray(g) for k, g in by_name(v.gates).items()}
    kept = {k: np.asarray(m) for k, m in by_name(v.masks).items()}

    def pool(a):
        n, h, w, c = a.shape
        return a.reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))

    emitted = {k: s * gates.get(k, 1.0) for k, s in spikes.items()}
    inputs = {"conv1": emitted["conv0"], "conv2": pool(emitted["conv1"]),
              "fc": pool(emitted["conv2"]).reshape(len(spikes["conv2"]), -1)}
    assert np.sum(spikes["conv1"] * (1 - gates["conv1"])) > 0  # gated-off neurons did fire: the gate matters
    expected = sum(numpy_pairs(inputs[k], kept[k], conv=k != "fc") for k in inputs)
    assert report["synops_per_image"] * len(images) == expected
    assert measure_synops(model, v, images) * len(images) == expected  # each epoch's count: the gates too
    by_layer = {r["lif_after"]: r["spikes_per_image"] * len(images) for r in report["neurons"]}
    assert by_layer == {k: float(np.sum(s)) for k, s in emitted.items()}
    # without the gates the same spikes would do more work
    ungated = {"conv1": spikes["conv0"], "conv2": pool(spikes["conv1"]),
               "fc": pool(spikes["conv2"]).reshape(len(spikes["conv2"]), -1)}
    assert sum(numpy_pairs(ungated[k], kept[k], conv=k != "fc") for k in ungated) > expected


def test_gated_ticket_exports_to_nir_and_runs_the_same_in_snntorch(digits, gated):
    pytest.importorskip("snntorch")
    from jsnn.interop.torch_sims import run_torch, snntorch_module

    model, v = gated
    graph = to_nir(model, v, (8, 8, 1), digits.mean, digits.std)
    # a Scale node after each gated LIF, the gate in NIR's (C, H, W); nothing after conv0's LIF
    np.testing.assert_array_equal(graph.nodes["conv1_lif_gate"].scale,
                                  np.transpose(np.asarray(by_name(v.gates)["conv1"]), (2, 0, 1)))
    assert ("conv1_lif", "conv1_lif_gate") in graph.edges and ("conv1_lif_gate", "pool0") in graph.edges
    assert "conv0_lif_gate" not in graph.nodes and ("conv0_lif", "conv1") in graph.edges
    images = np.asarray(jdata.normalize(digits.test_images[:60], digits.mean, digits.std))
    outputs, _ = run_torch(snntorch_module(graph), np.moveaxis(images, -1, -3), 2, len(images))
    logits, _, _ = jax.jit(lambda v, x: apply_model(model, v, x, train=False))(v, jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(predictions(jnp.asarray(outputs))), np.asarray(predictions(logits)))
    assert np.max(np.abs(np.asarray(outputs) - np.asarray(logits))) < 1e-3
    # jsnn's importer reads the Scale nodes too
    net, nv = from_nir(graph)
    imported = jax.jit(lambda v, x: apply_model(net, v, x, train=False)[0])(nv, jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(predictions(imported)), np.asarray(predictions(logits)))
    # the Scale nodes carry the gates: with every gate at 1 the graph computes another network
    for name in ("conv1_lif_gate", "conv2_lif_gate"):
        graph.nodes[name].scale = np.ones_like(graph.nodes[name].scale)
    ungated, _ = run_torch(snntorch_module(graph), np.moveaxis(images, -1, -3), 2, len(images))
    assert np.max(np.abs(np.asarray(ungated) - np.asarray(outputs))) > 0.1


SHI_CASE = dict(penalty_lambda=1e-4, finetune_epochs=1, mask_lr=0.05, mask_init=0.1)


def shi_case(sparse_config):
    """test_registry's case: the sparse-training setup's config at Shi's presets, and its options."""
    config = dataclasses.replace(sparse_config, model=None, lr=None, bn_affine=None).resolve("shi")
    return config, shi_run.ShiOptions(**SHI_CASE)


def test_bad_options_say_what_to_do(digits_sparse_training):
    config, _ = shi_case(digits_sparse_training[0])
    with pytest.raises(ValueError, match="--finetune-epochs must lie in"):
        shi_run.ShiOptions(finetune_epochs=config.epochs + 1).resolve(config)
    with pytest.raises(ValueError, match="--penalty-lambda must be >= 0"):
        shi_run.ShiOptions(penalty_lambda=-1.0, finetune_epochs=1).resolve(config)
    resolved = shi_run.ShiOptions(finetune_epochs=1).resolve(config)  # digits' presets
    assert (resolved.penalty_lambda, resolved.mask_lr) == (1e-6, 1e-2)


def test_sparse_training_reaches_shi_by_its_algorithm_name():
    sys.path.insert(0, str(ROOT / "train"))
    import sparse_training

    assert sparse_training.alias_argv(["--algorithm", "shi", "-T", "2"], "shi") == ["-T", "2"]
    assert sparse_training.alias_argv(["--algorithm=shi"], "shi") == []
    assert sparse_training.alias_argv(["--algorithm", "rigl"], "shi") is None
    assert sparse_training.ALIASES["shi"].METHOD == "shi"
