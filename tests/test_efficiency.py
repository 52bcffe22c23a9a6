"""What a ticket costs to run (jsnn.efficiency): every count against a hand computation or a
NumPy loop written here, independently of the counting pass."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from jsnn import efficiency as E
from jsnn.layers import ConvBN, MaskedDense
from jsnn.models import get_model
from jsnn.models.vgg import VGG16_PLAN
from jsnn.variables import Variables, apply_model, init_variables
from tests.programs import run_together

VAR_ONE = np.float32(1.0) - np.float32(1e-5)  # var + eps == 1 in f32: eval-mode BN is the identity


# --------------------------------------------------------------------------- the hand-sized network
def _hand_network():
    """Encoding conv 3x3x1->2 on a 2x2 image (pad 1), BN (identity), LIF, T = 3; linear 8->2.

    conv0 keeps 3 of its 18 weights: channel 0 only the centre tap (0.875), channel 1 the
    centre (0.25) and the tap right of it (0.75), so with image [[2, 1], [1, 0]]:
      channel 0 currents 1.75, 0.875, 0.875, 0   at (0,0) (0,1) (1,0) (1,1)
      channel 1 currents 1.25, 0.25,  0.25,  0   (0.25*2 + 0.75*1, 0.25*1, 0.25*1, 0)
    """
    model = get_model("digits_cnn", 2, timesteps=3, plan=(2,))
    v = init_variables(model, jax.random.key(0), (1, 2, 2, 1))
    k0 = np.zeros((3, 3, 1, 2), np.float32)
    m0 = np.zeros((3, 3, 1, 2), np.float32)
    k0[:, :, 0, :] = 0.5  # every weight nonzero; the mask decides what is kept
    k0[1, 1, 0, 0], m0[1, 1, 0, 0] = 0.875, 1
    k0[1, 1, 0, 1], m0[1, 1, 0, 1] = 0.25, 1
    k0[1, 2, 0, 1], m0[1, 2, 0, 1] = 0.75, 1
    k1 = np.full((8, 2), 0.5, np.float32)
    k1[6, 0] = 0.0  # kept by the mask but zero: not an effective connection
    m1 = np.array([[1, 1], [1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [1, 0], [1, 1]], np.float32)
    weights = {"conv0": {"kernel": k0}, "fc": {"kernel": k1, "bias": np.full(2, 0.1, np.float32)}}
    masks = {"conv0": {"kernel": m0}, "fc": {"kernel": m1}}
    stats = {"conv0": {"mean": np.zeros(2, np.float32), "var": np.full(2, VAR_ONE)}}
    variables = Variables(weights, masks, jax.tree.map(np.asarray, v.bn), stats)
    image = np.array([[2, 1], [1, 0]], np.float32).reshape(1, 2, 2, 1)
    return model, variables, image


def test_hand_network_every_number():
    model, variables, image = _hand_network()
    images = np.concatenate([image, np.zeros_like(image)])  # a blank image costs no operation
    # batch 3 > 2 images: the padded row must count nowhere (it would add 8 membrane updates)
    r = E.measure(model, variables, images, batch_size=3, energy=E.EnergyModel(e_ac=1.0, e_mac=10.0))
    assert r["images"] == 2
    assert E.measure_synops(model, variables, images, batch_size=3) == r["synops_per_image"]
    conv0, fc = r["layers"]
    # conv0 MACs, counted once (direct encoding): centre taps touch the 3 nonzero pixels in
    # both channels (3 + 3); channel 1's right tap touches pixel (0,1) from (0,0) only (1).
    assert conv0["layer"] == "conv0" and conv0["input"] == "real" and conv0["runs_per_image"] == 1
    assert conv0["macs"] == 7 and conv0["acs"] == 0
    # dense: 2 in-bound taps per axis at each of 2 outputs -> 4 x 4 taps, x 1 in x 2 out
    assert conv0["dense_ops"] == 2 * 32
    # every weight at this input: each window covers the 3 nonzero pixels, 4 positions x 2 channels
    assert conv0["unpruned_ops_per_image"] == 24 / 2
    assert conv0["bn_ops_per_image"] == 8  # 2x2x2 values normalised once per image
    assert (conv0["weights"], conv0["kept_weights"]) == (18, 3)
    # LIF (threshold 1, decay 0.25, hard reset), constant currents over t = 1, 2, 3:
    #   1.75, 1.25 -> spike every step; 0.875 -> U 0.875, 1.09375, 0.875: spikes at t = 2 only;
    #   0.25 -> U 0.25, 0.3125, 0.328125: never; 0 -> never.
    # Flattened (NHWC) inputs of fc that spike: t1 {0, 1}, t2 {0, 1, 2, 4}, t3 {0, 1}.
    (lif,) = r["neurons"]
    assert lif["spikes"] == 2 + 4 + 2 and lif["neurons"] == 8
    assert lif["firing_rate"] == pytest.approx(8 / 48) and lif["activation_sparsity"] == pytest.approx(40 / 48)
    # membrane updates (NeuroBench): all 8 at t = 1, then the stored potential changes for the two
    # 0.875 neurons (0.21875 -> 0 -> 0.21875) and the two 0.25 ones (0.0625, 0.078125, 0.08203125):
    # 8 + 4 + 4 for the image, 8 for the blank one (t = 1 only)
    assert lif["membrane_updates_per_image"] == (16 + 8) / 2
    assert lif["neuron_updates_per_image"] == 24
    # fc ACs: kept weights per input row 2,1,0,2,1,1,0,2 (row 6's kept weight is 0.0):
    # t1 2+1, t2 2+1+0+1, t3 2+1
    assert fc["input"] == "spikes" and fc["runs_per_image"] == 3
    assert fc["acs"] == 10 and fc["macs"] == 0
    assert fc["dense_ops"] == 2 * 3 * 16 and fc["unpruned_ops_per_image"] == 8 * 2 / 2
    assert fc["bias_adds_per_image"] == 6 and (fc["weights"], fc["kept_weights"]) == (16, 9)
    # totals per image (2 images)
    assert r["totals"]["synops"] == 10 and r["totals"]["macs"] == 7
    assert r["synops_per_image"] == 5 and r["macs_per_image"] == 3.5
    assert r["dense_macs_per_image"] == 32 + 48 and r["ann_macs_per_image"] == 32 + 16
    assert r["unpruned_synops_per_image"] == 8 and r["unpruned_macs_per_image"] == 12
    assert r["energy_per_image_j"] == pytest.approx((10 * 1.0 + 7 * 10.0) / 2)
    assert r["unpruned_energy_per_image_j"] == pytest.approx((16 * 1.0 + 24 * 10.0) / 2)
    assert r["ann_energy_per_image_j"] == pytest.approx(48 * 10.0)
    assert r["saving_vs_ann"] == pytest.approx(480 / 40)
    assert r["connection_sparsity"] == pytest.approx(1 - 12 / 34) and r["kept_weights"] == 12
    assert r["activation_sparsity"] == pytest.approx(40 / 48)
    assert r["pool_ops_per_image"] == 0
    # footprint: 44 f32 parameters (kernels 18 + 16, fc bias 2, BN scale/bias 2 + 2, mean/var 2 + 2)
    fp = r["footprint"]
    assert fp["dense_f32_bytes"] == 4 * 44
    rest = 4 * (44 - 34)
    assert fp["bitmask_bytes"] == rest + (4 * 3 + 3) + (4 * 9 + 2)  # values + ceil(bits / 8)
    # CSR: values, int16 column indices, int32 row pointers (fan_out + 1)
    assert fp["csr_bytes"] == rest + (4 * 3 + 2 * 3 + 4 * 3) + (4 * 9 + 2 * 9 + 4 * 3)
    assert r["footprint_bytes"] == fp["bitmask_bytes"] == 93 and fp["format"] == "bitmask"


def test_hand_network_soft_reset():
    """Soft reset (H = beta (U - V_th S)): the same spikes here, but the stored potential of the
    always-firing neurons now changes too: 1.75 -> H 0.1875, 0.234375, 0.24609375 and
    1.25 -> 0.0625, 0.078125, 0.08203125; 0.875 -> 0.21875, 0.0234375, 0.224609375."""
    import dataclasses

    model, variables, image = _hand_network()
    soft = model.clone(lif=dataclasses.replace(model.lif, reset="soft"))
    r = E.measure(soft, variables, np.concatenate([image, np.zeros_like(image)]))
    (lif,) = r["neurons"]
    assert lif["spikes"] == 8 and r["totals"]["synops"] == 10
    # t = 1: all 8 of each image; then 2 changes for each of the 6 neurons with a nonzero current
    assert r["totals"]["membrane_updates"] == (8 + 6 * 2) + 8


def test_default_energy_model_and_its_validation():
    model, variables, image = _hand_network()
    r = E.measure(model, variables, image)
    # Horowitz 2014: 0.9 pJ per AC, 4.6 pJ per MAC; the image alone: 10 ACs, 7 MACs
    assert r["energy_per_image_j"] == pytest.approx(10 * 0.9e-12 + 7 * 4.6e-12)
    assert r["ann_energy_per_image_j"] == pytest.approx(48 * 4.6e-12)
    with pytest.raises(ValueError, match="e_ac"):
        E.EnergyModel(e_ac=-1.0)
    with pytest.raises(ValueError, match="non-empty batch"):
        E.measure(model, variables, np.zeros((0, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match="labels"):
        E.measure(model, variables, image, labels=[0, 1])


# --------------------------------------------------------------------------- NumPy-loop reference
def _capture(model, variables, images):
    """Every ConvBN / MaskedDense input and output as the model computes them (one jitted pass)."""
    modules = {}

    def run(variables, images):
        seen = {}

        def grab(next_fun, args, kwargs, context):
            if isinstance(context.module, ConvBN) and context.method_name == "__call__":
                kwargs = {**kwargs, "defer_bn": False}  # the output with BatchNorm's map applied
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, (ConvBN, MaskedDense)) and context.method_name == "__call__":
                path = "/".join(context.module.scope.path)
                seen[path], modules[path] = (args[0], out), context.module
            return out

        with nn.intercept_methods(grab):
            apply_model(model, variables, images, train=False)
        return seen

    seen = jax.device_get(jax.jit(run)(variables, images))  # a pytree: keys come back sorted
    return {path: (np.asarray(seen[path][0]), np.asarray(seen[path][1]), m) for path, m in modules.items()}


def _pairs_loop(x, keep, stride, pad):
    """Sum over outputs of (nonzero input, kept weight) pairs, one kernel tap at a time."""
    n, h, w, _ = x.shape
    k = keep.shape[0]
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad((x != 0).astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    total = 0
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            total += int(np.einsum("nhwc,co->", window, keep[i, j].astype(np.int64)))
    return total


def _lif_loop(currents, timesteps, threshold=1.0, decay=0.25):
    """Hard-reset LIF in NumPy f32 over [T*B, ...] currents: (spikes, NeuroBench membrane updates)."""
    x = currents.reshape((timesteps, -1)).astype(np.float32)
    h = np.zeros(x.shape[1], np.float32)
    spikes, updates, previous = 0, 0, None
    for t in range(timesteps):
        u = h + x[t]
        s = (u - np.float32(threshold) >= 0).astype(np.float32)
        h = np.float32(decay) * u * (np.float32(1) - s)
        spikes += int(s.sum())
        updates += h.size if previous is None else int(np.count_nonzero(h != previous))
        previous = h
    return spikes, updates


def _random_ticket(model, shape, seed):
    v = init_variables(model, jax.random.key(seed), (1,) + shape)
    rng = np.random.default_rng(seed)
    masks = jax.tree.map(lambda m: (rng.random(m.shape) < 0.5).astype(np.float32), v.masks)
    # BN statistics that make the layers fire at moderate rates
    stats = jax.tree.map(lambda s: np.asarray(s) * 0.3, v.batch_stats)
    return Variables(v.weights, masks, v.bn, stats)


CASES = {
    # SNN-VGG-16's structure (13 convs, 5 max pools, classifier) at 1/16 of its widths
    "vgg16": (lambda: get_model("vgg16", 10, timesteps=2,
                                plan=tuple(c if c == "M" else c // 16 for c in VGG16_PLAN)), (32, 32, 3)),
    # Res-SNN-19's parts (stem, 3 stages of basic blocks: identity and strided 1x1-conv shortcuts,
    # global average pool over 2x2, fc1 -> LIF -> fc2) at small widths, 2/1/1 blocks (not 3/3/2)
    "resnet19": (lambda: get_model("resnet19", 10, timesteps=2, stem_features=4, stage_features=(4, 8, 16),
                                   stage_blocks=(2, 1, 1), hidden_features=8), (16, 16, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_counts_match_numpy_loops(name):
    build, shape = CASES[name]
    model = build()
    variables = _random_ticket(model, shape, seed=1)
    images = np.random.default_rng(2).normal(size=(3,) + shape).astype(np.float32)
    r = E.measure(model, variables, images, batch_size=2)
    seen = _capture(model, variables, images)
    T, n = model.timesteps, len(images)
    by_name = {row["layer"]: row for row in r["layers"]}
    assert list(by_name) == list(seen)  # every conv / linear layer, in forward order
    acs = macs = 0
    for path, (x, out, module) in seen.items():
        w = (np.asarray(_lookup(variables.weights, path)["kernel"])
             * np.asarray(_lookup(variables.masks, path)["kernel"]))
        keep = w != 0
        if isinstance(module, ConvBN):
            pairs = _pairs_loop(x, keep, module.stride, module.kernel_size // 2)
            unpruned = _pairs_loop(x, np.ones_like(keep), module.stride, module.kernel_size // 2)
        else:
            pairs = int(((x != 0).astype(np.int64) @ keep.astype(np.int64)).sum())
            unpruned = int((x != 0).sum()) * keep.shape[-1]
        spiking = bool(np.all(np.isin(x, (0.0, 1.0))))
        row = by_name[path]
        assert (row["acs"], row["macs"]) == ((pairs, 0) if spiking else (0, pairs)), path
        assert row["kept_weights"] == int(keep.sum())
        assert row["unpruned_ops_per_image"] == unpruned / n, path  # every weight kept, the ticket's inputs
        acs, macs = acs + row["acs"], macs + row["macs"]
    assert r["totals"]["synops"] == acs and r["totals"]["macs"] == macs
    # the SynOps-only pass (each epoch's log): the same count
    assert E.measure_synops(model, variables, images, batch_size=2) == acs / n
    # the encoding sees the image (MACs, once); Res-SNN-19's fc1 sees an average pool (MACs, T times)
    first = r["layers"][0]
    assert first["input"] == "real" and first["runs_per_image"] == 1
    if name == "vgg16":  # max pools leave 16x16x4, 8x8x8, 4x4x16, 2x2x32, 1x1x32: 3 comparisons each
        assert r["pool_ops_per_image"] == 3 * (16 * 16 * 4 + 8 * 8 * 8 + 4 * 4 * 16 + 2 * 2 * 32 + 32) * T
    else:  # global average pool: one accumulate per value of the last block's output (16 -> 8 -> 4 -> 2)
        assert r["pool_ops_per_image"] == 2 * 2 * 16 * T
    if name == "resnet19":
        assert by_name["fc1"]["input"] == "real" and by_name["fc1"]["macs"] > 0
        assert by_name["stage1_block0/shortcut"]["shape"].startswith("1x1x4->8, stride 2")
        assert "stage0_block1/conv2" in by_name and "stage0_block1/shortcut" not in by_name  # identity shortcut
        assert all(row["input"] == "spikes" for p, row in by_name.items() if p not in ("stem", "fc1"))
    else:
        assert all(row["input"] == "spikes" for row in r["layers"][1:])
    # neurons: a NumPy LIF over the currents each LIF layer receives
    expected = _lif_currents(name, seen, T)
    assert [row["lif_after"] for row in r["neurons"]] == list(expected)
    for row in r["neurons"]:
        spikes, updates = _lif_loop(expected[row["lif_after"]], T)
        assert row["spikes"] == spikes and row["membrane_updates_per_image"] * n == updates, row["lif_after"]
    assert 0.01 < r["firing_rate"] < 0.99  # the check above is not vacuous


def _lookup(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def _lif_currents(name, seen, T):
    """The input current of every LIF layer, from the captured layer outputs (each conv -> BN -> LIF; a
    residual block's second BN plus its shortcut feeds the block's LIF)."""
    def folded(path):
        out = seen[path][1]
        if path in ("conv0", "stem"):  # direct encoding: the same current at every timestep
            out = np.broadcast_to(out, (T,) + out.shape).reshape((-1,) + out.shape[1:])
        return out

    currents = {}
    if name == "vgg16":
        for path in seen:
            if path != "fc":
                currents[path] = folded(path)
        return currents
    currents["stem"] = folded("stem")
    for path in seen:
        if path.endswith("/conv1"):
            block = path[: -len("/conv1")]
            x = seen[path][0]
            currents[path] = folded(path)
            shortcut = seen[block + "/shortcut"][1] if block + "/shortcut" in seen else x
            currents[block + "/conv2"] = seen[block + "/conv2"][1] + shortcut
    currents["fc1"] = folded("fc1")
    return currents


def test_ticket_cost_is_the_ticket_measured_on_the_test_set(tmp_path):
    """What every level / round writes: its results entry gains "efficiency", measured on the
    test set as the evaluation step preprocesses it (so its accuracy is the ticket's)."""
    import optax

    from jsnn.config import TrainConfig
    from jsnn.data import load_dataset
    from jsnn.models import build_model
    from jsnn.runs.tickets import ticket_cost, write_ticket
    from jsnn.ticket import load_ticket
    from jsnn.trainer import create_state
    from jsnn.training_rules import MaskedTraining

    config = TrainConfig(dataset="digits", batch_size=120).resolve("imp")
    model = build_model(config, 10)
    variables = _random_ticket(model, (8, 8, 1), seed=4)
    state = create_state(variables, {}, MaskedTraining(), optax.sgd(0.1), 0)
    path = str(tmp_path / "round_01.npz")
    write_ticket(path, config, 10, state, MaskedTraining(), {"round": 1})
    dataset = load_dataset("digits")
    eff = ticket_cost(config, 10, state, MaskedTraining(), dataset)
    expected = E.measure(model, variables, dataset.test_images, dataset.test_labels, batch_size=120,
                         normalize=(dataset.mean, dataset.std))
    for key in ("synops_per_image", "macs_per_image", "dense_macs_per_image", "energy_per_image_j",
                "activation_sparsity", "connection_sparsity", "footprint_bytes", "test_accuracy"):
        assert eff[key] == expected[key], key
    assert eff["layers"] == expected["layers"] and eff["neurons"] == expected["neurons"]
    assert eff["connection_sparsity"] == pytest.approx(0.5, abs=0.02) and eff["synops_per_image"] > 0
    assert load_ticket(path).info == {"round": 1}


def test_report_program(tmp_path):
    """train/ticket.py report: every ticket of a run measured, savings against the run's dense
    SNN (IMP round 0), tables and figure written; bad input gives one error line."""
    import json
    import os
    import sys

    from jsnn.config import TrainConfig
    from jsnn.data import load_dataset
    from jsnn.models import build_model
    from jsnn.runs.tickets import round_path
    from jsnn.ticket import save_ticket

    config = TrainConfig(dataset="digits", batch_size=120).resolve("imp")
    model = build_model(config, 10)
    dense = init_variables(model, jax.random.key(5), (1, 8, 8, 1))
    dense = Variables(dense.weights, dense.masks, dense.bn,
                      jax.tree.map(lambda s: np.asarray(s) * 0.3, dense.batch_stats))
    pruned = _random_ticket(model, (8, 8, 1), seed=5)
    work = str(tmp_path / "imp")
    save_ticket(round_path(work, 0), config, 10, dense, {"round": 0, "test_accuracy": 0.1})
    save_ticket(round_path(work, 1), config, 10, pruned, {"round": 1, "test_accuracy": 0.1})
    script = os.path.join(os.path.dirname(__file__), "..", "train", "ticket.py")
    # a run's report and a report of a folder without tickets, started together (tests/programs.py)
    run, bad = run_together([[sys.executable, script, "report", "--workdir", work, "--e-ac", "1", "--e-mac", "10"],
                             [sys.executable, script, "report", "--workdir", str(tmp_path)]], timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.load(open(os.path.join(work, "efficiency.json")))
    assert os.path.getsize(os.path.join(work, "accuracy_vs_energy.png")) > 0
    assert [t["label"] for t in report["tickets"]] == ["round 0", "round 1"]
    assert report["dense_snn"].endswith("round_00.npz")
    dataset = load_dataset("digits")
    for row, variables in zip(report["tickets"], (dense, pruned)):
        expected = E.measure(model, variables, dataset.test_images, dataset.test_labels, batch_size=120,
                             energy=E.EnergyModel(1.0, 10.0), normalize=(dataset.mean, dataset.std))
        got = row["efficiency"]
        assert got["totals"] == expected["totals"] and got["energy_per_image_j"] == expected["energy_per_image_j"]
    e0, e1 = (t["efficiency"]["energy_per_image_j"] for t in report["tickets"])
    assert report["tickets"][1]["saving_vs_dense_snn"] == pytest.approx(e0 / e1)
    assert report["tickets"][0]["efficiency"]["connection_sparsity"] == 0.0
    markdown = open(os.path.join(work, "efficiency.md")).read()
    assert "| conv2 | 3x3x64->128" in markdown and "round 1" in run.stdout and "best ticket" in run.stdout
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "holds no tickets" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_entries_figure(tmp_path):
    """The programs' figure: entries without an efficiency entry (older runs) are left out."""
    from jsnn.runs.results import entries_figure

    def entry(energy, accuracy):
        return {"test_accuracy": accuracy, "efficiency": {"energy_per_image_j": energy, "ann_energy_per_image_j": 1e-5}}

    path = str(tmp_path / "acc_energy.png")
    assert entries_figure({"IMP": [[entry(2e-6, 0.9), {"test_accuracy": 0.8}, entry(1e-6, 0.95)]]}, path) == path
    assert (tmp_path / "acc_energy.png").stat().st_size > 0
    assert entries_figure({"IMP": [[{"test_accuracy": 0.8}]]}, str(tmp_path / "none.png")) is None
    assert not (tmp_path / "none.png").exists()


def test_an_epochs_synops_come_from_the_evaluation_pass_and_equal_the_counting_pass():
    """A run with a cost report logs each epoch's SynOps per test image. At f32 the evaluation step counts them
    in its own pass over the test set (one compiled step, ``Trainer.evaluate(synops=True)``); the number is
    ``measure_synops_dataset``'s, exactly, on a network with half its weights pruned and a test set whose last
    batch is padded (100 images, batch 64), and the accuracy and loss are the plain evaluation's. A bf16 model's
    spikes are not the f32 counting model's, so there a pass of its own counts them, at f32. The same state
    evaluated again gives the same numbers without a pass."""
    from jsnn import trainer as trainer_module
    from jsnn.config import TrainConfig
    from jsnn.models import build_model
    from jsnn.trainer import Trainer
    from jsnn.training_rules import MaskedTraining
    from tests.small_data import digits_subset

    ds = digits_subset(128, 100)
    rule = MaskedTraining()
    for precision in ("f32", "bf16"):
        config = TrainConfig(timesteps=2, epochs=1, batch_size=64, progress=False, precision=precision).resolve("imp")
        model = build_model(config, ds.num_classes)
        trainer = Trainer(config, model, ds)
        variables = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
        masks = jax.tree.map(lambda m, k: jax.random.bernoulli(k, 0.5, m.shape).astype(m.dtype), variables.masks,
                             jax.tree.unflatten(jax.tree.structure(variables.masks),
                                                list(jax.random.split(jax.random.key(1),
                                                                      len(jax.tree.leaves(variables.masks))))))
        state = trainer.new_state(variables._replace(masks=masks), {}, rule, 0)
        plain = trainer.evaluate(state, rule)
        with_synops = trainer.evaluate(state, rule, synops=True)  # the first evaluation had no SynOps: a pass
        counted = Variables(state.weights, state.masks, state.bn, state.batch_stats)
        expected = E.measure_synops_dataset(model, jax.device_get(counted), ds, batch_size=64)
        assert with_synops["synops_per_image"] == expected > 0, precision
        assert {k: with_synops[k] for k in plain} == plain
        assert (("eval_synops", rule) in trainer.jit_cache) == (precision == "f32")
        # the same state again (a segment's entry after its last epoch): the numbers, without a pass
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trainer_module.jdata, "process_eval_batches", None)
            assert trainer.evaluate(state, rule) == plain
            assert trainer.evaluate(state, rule, synops=True) == with_synops
