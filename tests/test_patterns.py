"""Sparsity types (jsnn/sparsity/patterns.py): N:M and channel masks against NumPy references written
here, the pattern check, unstructured masks bit-identical to those before sparsity types existed, the
options and signatures of IMP and edge-popup, and one short IMP run (channel, 2:4) and edge-popup level
(2:4) on a small digits setup (256 training images, T = 2, 2 epochs) whose tickets keep the pattern and
whose cost report counts the kept weights.
"""
import dataclasses
import hashlib
import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jsnn.runs.edge_popup as eps
import jsnn.runs.imp as imp
from jsnn.config import TrainConfig
from jsnn.runs.outputs import Outputs
from jsnn.runs.run import Run
from jsnn.runs.tickets import TICKET_FILE, level_dir, round_path
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import distributions, patterns
from jsnn.sparsity.patterns import PatternError, check_pattern
from jsnn.sparsity.score_masks import masks_from_scores, top_k_mask
from jsnn.ticket import load_ticket
from jsnn.variables import named_kernels

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"conv0": (3, 3, 1, 8), "conv1": (3, 3, 8, 16), "fc": (64, 10), "tiny": (2, 3)}


def tree_of(arrays: dict) -> dict:
    return {n: {"kernel": jnp.asarray(a)} for n, a in arrays.items()}


def flat_of(tree: dict) -> dict:
    return {n: np.asarray(v["kernel"]) for n, v in tree.items()}


# ----------------------------------------------------------------------------- NumPy references


def numpy_n_of_m(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Group by m along axis -2; keep the n largest of each group, of equal ones the later (stable argsort)."""
    x = np.moveaxis(scores, -2, -1)
    groups = x.reshape(-1, m)
    out = np.zeros_like(groups, dtype=np.float32)
    for g, row in enumerate(groups):
        out[g, np.argsort(row, kind="stable")[m - n:]] = 1
    return np.moveaxis(out.reshape(x.shape), -1, -2)


def numpy_channels(scores: np.ndarray, k: int) -> np.ndarray:
    """Sum over all axes but the last, keep round(k / weights per channel) channels (at least 1)."""
    per = scores.size // scores.shape[-1]
    c = min(scores.shape[-1], max(1, round(k / per)))
    sums = scores.astype(np.float64).reshape(-1, scores.shape[-1]).sum(0)
    kept = np.zeros(scores.shape[-1], np.float32)
    kept[np.argsort(sums, kind="stable")[len(sums) - c:]] = 1
    return np.broadcast_to(kept, scores.shape).copy()


# ----------------------------------------------------------------------------- N:M


def test_two_of_four_by_hand_on_a_linear_and_a_conv_kernel():
    # a linear kernel [in = 8, out = 2]: groups run down each column (the input axis)
    w = np.array([[1, 0], [3, 0], [2, 0], [2, 0],  # column 0: 3, then the later of the tied 2s; column 1: all tied,
                  [0, 5], [0, 6], [5, 7], [-1, 8]], np.float32)  # the later two
    expected = np.array([[0, 0], [1, 0], [0, 1], [1, 1],
                         [0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    np.testing.assert_array_equal(patterns.keep("2:4", jnp.asarray(w), 0), expected)
    # an HWIO conv kernel (1, 1, in = 4, out = 1): the group is the 4 input channels of one tap
    conv = np.array([0.5, -2.0, 0.1, 3.0], np.float32).reshape(1, 1, 4, 1)
    np.testing.assert_array_equal(patterns.keep("2:4", jnp.asarray(conv), 0).reshape(-1), [1, 0, 0, 1])
    np.testing.assert_array_equal(patterns.keep("1:4", jnp.asarray(conv), 0).reshape(-1), [0, 0, 0, 1])


@pytest.mark.parametrize("spec, shape", [("2:4", (3, 3, 8, 16)), ("2:4", (64, 10)), ("1:4", (3, 3, 16, 5)),
                                         ("3:8", (16, 7)), ("4:4", (8, 3))])
def test_n_of_m_matches_numpy_and_every_group_keeps_exactly_n(spec, shape):
    n, m = map(int, spec.split(":"))
    rng = np.random.default_rng(sum(shape))
    for scores in (rng.normal(size=shape).astype(np.float32),
                   rng.integers(0, 3, size=shape).astype(np.float32)):  # many ties
        mask = np.asarray(patterns.keep(spec, jnp.asarray(scores), 0))
        np.testing.assert_array_equal(mask, numpy_n_of_m(scores, n, m))
        ones = np.moveaxis(mask, -2, -1).reshape(-1, m).sum(1)
        assert (ones == n).all() and mask.sum() == scores.size * n // m
        check_pattern({"layer": {"kernel": mask}}, spec)


def test_n_of_m_is_jittable_and_ranks_pruned_weights_last():
    scores = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    jitted = jax.jit(lambda s: patterns.keep("2:4", s, 0))
    np.testing.assert_array_equal(jitted(scores), patterns.keep("2:4", scores, 0))
    live = np.ones((8, 4), np.float32)
    live[0, 0] = 0  # a pruned weight with the largest score still loses to the live ones of its group
    scores = scores.at[0, 0].set(100.0)
    out = flat_of(patterns.prune_per_layer("2:4", {"l": {"kernel": scores}}, {"l": {"kernel": jnp.asarray(live)}},
                                           {"l": 16}))["l"]
    assert out[0, 0] == 0 and out[:4, 0].sum() == 2


def test_a_layer_whose_input_axis_is_not_a_multiple_of_m_is_left_dense():
    kind = patterns.sparsity_type("2:4")
    scores = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 1, 8)).astype(np.float32))
    np.testing.assert_array_equal(patterns.keep("2:4", scores, 5), np.ones((3, 3, 1, 8)))
    assert kind.count((3, 3, 1, 8), 5) == 72 and kind.count((3, 3, 8, 16), 5) == 576
    assert patterns.dense_layers("2:4", LAYERS) == ("conv0", "tiny")
    assert patterns.dense_note("2:4", LAYERS) == "sparsity type 2:4 leaves conv0, tiny dense (input axis not a " \
        "multiple of 4)"
    assert patterns.dense_note("channel", LAYERS) is None and patterns.dense_note("2:4", {"fc": (64, 10)}) is None
    check_pattern({"conv0": {"kernel": np.ones((3, 3, 1, 8))}}, "2:4")
    broken = np.ones((3, 3, 1, 8))
    broken[0, 0, 0, 0] = 0
    with pytest.raises(PatternError, match="layer conv0: its input axis"):
        check_pattern({"conv0": {"kernel": broken}}, "2:4")


def test_check_pattern_names_the_layer_that_breaks_n_of_m():
    rng = np.random.default_rng(2)
    masks = {n: numpy_n_of_m(rng.normal(size=s), 2, 4) for n, s in [("a", (3, 3, 8, 4)), ("b", (16, 4))]}
    check_pattern(tree_of(masks), "2:4")
    masks["b"][0, 0] = 1 - masks["b"][0, 0]  # one group now keeps 1 or 3
    with pytest.raises(PatternError, match="layer b: 1 of its 16 groups"):
        check_pattern(tree_of(masks), "2:4")
    with pytest.raises(PatternError, match="layer a: .*other than 0 and 1"):
        check_pattern(tree_of({"a": masks["a"] * 2}), "2:4")
    with pytest.raises(PatternError, match="layer a is kept dense"):
        check_pattern(tree_of({"a": masks["a"]}), "2:4", dense={"a"})
    with pytest.raises(PatternError, match="layer a"):  # a dense mask is not 2:4 unless the layer is kept dense
        check_pattern(tree_of({"a": np.ones((3, 3, 8, 4))}), "2:4")
    check_pattern(tree_of({"a": np.ones((3, 3, 8, 4))}), "2:4", dense={"a"})


# ----------------------------------------------------------------------------- channel


@pytest.mark.parametrize("shape, k", [((3, 3, 8, 16), 300), ((3, 3, 8, 16), 330), ((64, 10), 230), ((3, 3, 1, 8), 1),
                                     ((2, 3), 6)])  # 330 / 72 = 4.6 channels: 5, 230 / 64 = 3.6: 4
def test_channel_masks_are_whole_channels_of_the_rounded_count(shape, k):
    rng = np.random.default_rng(len(shape) + k)
    for scores in (np.abs(rng.normal(size=shape)).astype(np.float32),
                   np.ones(shape, np.float32)):  # every channel tied: the later ones are kept
        mask = np.asarray(patterns.keep("channel", jnp.asarray(scores), k))
        np.testing.assert_array_equal(mask, numpy_channels(scores, k))
        per = math.prod(shape[:-1])
        assert mask.sum() == per * min(shape[-1], max(1, round(k / per)))
        assert mask.sum() == patterns.sparsity_type("channel").count(shape, k)
        check_pattern({"layer": {"kernel": mask}}, "channel")
    assert np.asarray(patterns.keep("channel", jnp.ones(shape), k)).reshape(-1, shape[-1])[:, -1].all()


def test_check_pattern_names_a_layer_keeping_part_of_a_channel():
    mask = numpy_channels(np.arange(32, dtype=np.float32).reshape(8, 4), 16)
    check_pattern({"fc": {"kernel": mask}}, "channel")
    mask[3, 2] = 0
    with pytest.raises(PatternError, match="layer fc: its mask keeps part of output channel 2"):
        check_pattern({"fc": {"kernel": mask}}, "channel")
    check_pattern({"fc": {"kernel": mask}}, "unstructured")  # any {0, 1} mask is unstructured


def test_channel_prune_keeps_the_distributions_counts_rounded_to_channels():
    rng = np.random.default_rng(3)
    scores = {n: np.abs(rng.normal(size=s)).astype(np.float32) for n, s in LAYERS.items()}
    ones = tree_of({n: np.ones(s, np.float32) for n, s in LAYERS.items()})
    counts = distributions.uniform(None, ones, 0.6)  # conv1: 691 weights, 9.6 channels: 10 kept
    masks = flat_of(distributions.prune("uniform", tree_of(scores), ones, 0.6, sparsity_type="channel"))
    assert masks["conv1"].sum() == 10 * 72
    for n, s in scores.items():
        np.testing.assert_array_equal(masks[n], numpy_channels(s, counts[n]), err_msg=n)


# ----------------------------------------------------------------------------- names, registry, gradients


def test_types_are_parsed_from_the_registry():
    assert patterns.sparsity_type_names() == ["N:M", "channel", "unstructured"]
    assert [patterns.canonical(s) for s in ("unstructured", " Channel", "2:4", "1:8")] == \
        ["unstructured", "channel", "2:4", "1:8"]
    assert patterns.fixed_density("2:4") == 0.5 and patterns.fixed_density("channel") is None
    for bad in ("3:2", "0:4", "2-4", "block"):
        with pytest.raises(ValueError, match="sparsity type"):
            patterns.sparsity_type(bad)


def test_edge_popup_top_k_in_a_pattern_is_straight_through():
    scores = jnp.asarray(np.random.default_rng(4).normal(size=(8, 6)).astype(np.float32))
    cotangent = jnp.asarray(np.random.default_rng(5).normal(size=(8, 6)).astype(np.float32))
    for spec in ("2:4", "channel"):
        mask = top_k_mask(scores, 0.5, spec)
        np.testing.assert_array_equal(mask, patterns.keep(spec, jnp.abs(scores), 24))
        grad = jax.grad(lambda s: jnp.sum(top_k_mask(s, 0.5, spec) * cotangent))(scores)
        np.testing.assert_allclose(grad, cotangent * jnp.sign(scores))
    np.testing.assert_array_equal(top_k_mask(scores, 0.0, "2:4"), np.ones((8, 6)))  # a layer kept dense


# ----------------------------------------------------------------------------- unstructured unchanged

# sha256 (first 16 hex digits) of the masks of ``_unstructured_masks`` computed at revision adcef39, before
# sparsity types existed (jsnn/sparsity/distributions.py prune; jsnn/sparsity/score_masks.py masks_from_scores)
BEFORE = {"global": ("cb264102339c3057", "b7b8d041b3a0136e"), "uniform": ("612607ec30e75e9e", "64082e03ce4cb799"),
          "erk": ("d0de8b6db93e9d8e", "4c7dc109af3c3b19"), "matched": ("a4c9e4df24c5726d", "1d057cc7ac7d1ac6"),
          "edge_popup": "039926ff9138f308"}


def _digest(tree) -> str:
    h = hashlib.sha256()
    for n in sorted(tree):
        a = np.asarray(tree[n]["kernel"])
        h.update(a.dtype.str.encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def test_unstructured_masks_are_bit_identical_to_before_sparsity_types():
    rng = np.random.default_rng(22)
    scores = tree_of({n: np.round(rng.normal(size=s), 1).astype(np.float32) for n, s in LAYERS.items()})  # ties
    mags = tree_of({n: np.abs(rng.normal(size=s)).astype(np.float32) for n, s in LAYERS.items()})
    ones = tree_of({n: np.ones(s, np.float32) for n, s in LAYERS.items()})
    for name in ("global", "uniform", "erk", "matched"):
        for spec in ({}, {"sparsity_type": "unstructured"}):
            m1 = distributions.prune(name, scores, ones, 0.75, mags, **spec)
            m2 = distributions.prune(name, scores, m1, 0.75 ** 2, mags, **spec)
            assert (_digest(m1), _digest(m2)) == BEFORE[name], name
    sparsities = {"conv0": {"kernel": 0.0}, "conv1": {"kernel": 0.5}, "fc": {"kernel": 0.9}, "tiny": {"kernel": 0.5}}
    assert _digest(masks_from_scores(scores, sparsities)) == BEFORE["edge_popup"]
    assert _digest(masks_from_scores(scores, sparsities, "unstructured")) == BEFORE["edge_popup"]


# ----------------------------------------------------------------------------- options and signatures

# the options fields in the signatures before sparsity types (less the RUN_CONTROL ones)
IMP_FIELDS = {"prune_rate", "rewind_epoch", "criterion", "scope", "dns", "calibration_batches", "control",
              "ticket_dir", "early_bird", "early_bird_window", "early_bird_threshold"}
EDGE_POPUP_FIELDS = {"dense_encoding", "dense_classifier", "distribution", "control"}


def test_signatures_hold_the_type_only_when_it_is_not_unstructured():
    config = TrainConfig(timesteps=2, epochs=2, batch_size=64).resolve("imp")
    default = imp.IMPOptions(rounds=3).resolve(config)
    sig = imp.imp_signature(config, default)
    assert set(sig) == {*run_signature("imp", config), *IMP_FIELDS}
    assert sig == {k: v for k, v in run_signature("imp", config, default).items() if k != "sparsity_type"}
    channel = dataclasses.replace(default, sparsity_type="channel")
    assert imp.imp_signature(config, channel) == {**sig, "sparsity_type": "channel"}
    assert imp.IMPPlan(config, imp.IMPOptions(rounds=3)).signature == sig

    config = TrainConfig(timesteps=2, epochs=2, batch_size=64).resolve("edge_popup")
    sig = eps.EdgePopupLevel(config, eps.EdgePopupOptions(), 0.5).signature
    assert set(sig) == {*run_signature("edge_popup", config), *EDGE_POPUP_FIELDS, "sparsity"}
    two_four = eps.EdgePopupLevel(config, eps.EdgePopupOptions(sparsity_type="2:4"), 0.5).signature
    assert two_four == {**sig, "sparsity_type": "2:4"}
    assert set(eps.EdgePopupSweep(config, eps.EdgePopupOptions()).signature) == {*run_signature("edge_popup", config),
                                                                                 *EDGE_POPUP_FIELDS}


def test_options_check_what_each_type_means_for_imp_and_edge_popup():
    config = TrainConfig(timesteps=2, epochs=2, batch_size=64).resolve("imp")
    assert imp.IMPOptions(rounds=2, sparsity_type=" 2:4").resolve(config).sparsity_type == "2:4"
    with pytest.raises(ValueError, match="--rounds 2"):
        imp.IMPOptions(rounds=3, sparsity_type="2:4").resolve(config)
    with pytest.raises(ValueError, match="--control random draws unstructured masks"):
        imp.IMPOptions(rounds=3, sparsity_type="channel", control="random", ticket_dir="x").resolve(config)
    with pytest.raises(ValueError, match="sparsity type"):
        imp.IMPOptions(sparsity_type="3:2").resolve(config)
    assert imp.sparsity_target(imp.IMPOptions(rounds=2, sparsity_type="1:4"), 1) == 0.75
    assert imp.sparsity_target(imp.IMPOptions(sparsity_type="channel"), 2) == pytest.approx(1 - 0.75 ** 2)
    assert eps.EdgePopupOptions(sparsities=(0.5,), sparsity_type="2:4").sparsity_type == "2:4"
    with pytest.raises(ValueError, match="its one level is --sparsity 0.5"):
        eps.EdgePopupOptions(sparsities=(0.5, 0.9), sparsity_type="2:4")
    with pytest.raises(ValueError, match="--distribution erk does not apply"):
        eps.EdgePopupOptions(sparsities=(0.5,), sparsity_type="2:4", distribution="erk")
    eps.EdgePopupOptions(sparsities=(0.3, 0.9), sparsity_type="channel", distribution="erk")


def program(name):
    """train/NAME.py as a module (its parser; main is not run)."""
    sys.path.insert(0, str(ROOT / "train"))  # the programs import their shared flags as `flags`
    spec = importlib.util.spec_from_file_location(f"train_program_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_programs_take_sparsity_type(capsys):
    prog = program("imp")
    import flags  # on the path once a program is loaded

    assert flags.parse_args(prog.parser(), []).sparsity_type == "unstructured"
    args = flags.parse_args(prog.parser(), ["--sparsity-type", "2:4", "--rounds", "2"])
    assert flags.options_of(args, imp.IMPOptions).sparsity_type == "2:4"
    with pytest.raises(SystemExit):
        flags.parse_args(prog.parser(), ["--sparsity-type", "3:2"])
    assert "N:M needs 0 < n <= m" in capsys.readouterr().err
    ep = program("edge_popup")

    def edge_popup_options(argv):
        return flags.method_settings(flags.parse_args(ep.parser(), argv), "edge_popup")[1]

    options = edge_popup_options(["--sparsity-type", "1:4"])
    assert (options.sparsity_type, options.sparsities) == ("1:4", (0.75,))
    options = edge_popup_options(["--sparsity-type", "channel"])
    assert options.sparsity_type == "channel"
    assert options.sparsities == edge_popup_options([]).sparsities


# ----------------------------------------------------------------------------- short runs


@pytest.fixture(scope="module")
def imp_setup(digits_imp):
    """The session's small digits IMP setup (tests/small_data.py): 256 images, T = 2, batch 64, 2 epochs."""
    return digits_imp


def numpy_global_counts(scores: dict, density: float) -> dict:
    """Per-layer counts of one global ranking (stable argsort: of equal scores the later index)."""
    names = sorted(scores)
    flat = np.concatenate([scores[n].reshape(-1) for n in names])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[flat.size - round(flat.size * density):]] = True
    out, start = {}, 0
    for n in names:
        out[n] = int(keep[start:start + scores[n].size].sum())
        start += scores[n].size
    return out


def assert_cost_report_counts_the_mask(entry: dict, masks: dict):
    eff = entry["efficiency"]
    assert eff["kept_weights"] == sum(int(np.count_nonzero(m)) for m in masks.values())
    assert eff["total_weights"] == sum(m.size for m in masks.values())


def test_imp_with_channel_prunes_whole_channels_of_the_global_counts(imp_setup, tmp_path):
    ds, config, model, trainer = imp_setup
    options = imp.IMPOptions(rounds=2, rewind_epoch=1, sparsity_type="channel")
    results = Run(imp.IMPPlan(config, options), config, str(tmp_path), trainer=trainer,
                  outputs=Outputs(plots=False)).execute()
    assert results["sparsity_type"] == "channel" and results["runs"][1]["method_label"].endswith(", channel")
    trained = named_kernels(load_ticket(round_path(str(tmp_path), 0)).variables.weights)  # what round 1 pruned
    ticket = load_ticket(round_path(str(tmp_path), 1))
    masks = {n: np.asarray(m) for n, m in named_kernels(ticket.variables.masks).items()}
    scores = {n: np.abs(np.asarray(w)) for n, w in trained.items()}
    counts = numpy_global_counts(scores, 0.75)
    for n, s in scores.items():
        np.testing.assert_array_equal(masks[n], numpy_channels(s, counts[n]), err_msg=n)
    check_pattern(ticket.variables.masks, "channel")
    assert_cost_report_counts_the_mask(results["runs"][1], masks)


def test_imp_with_two_of_four_prunes_round_one_to_two_of_four(imp_setup, tmp_path, capsys):
    ds, config, model, trainer = imp_setup
    options = imp.IMPOptions(rounds=2, rewind_epoch=1, sparsity_type="2:4")
    results = Run(imp.IMPPlan(config, options), config, str(tmp_path), trainer=trainer,
                  outputs=Outputs(plots=False)).execute()
    assert f"sparsity type 2:4 leaves {model.encoding_layer} dense" in capsys.readouterr().out
    entry = results["runs"][1]
    assert entry["sparsity_target"] == 0.5
    trained = named_kernels(load_ticket(round_path(str(tmp_path), 0)).variables.weights)
    ticket = load_ticket(round_path(str(tmp_path), 1))
    masks = {n: np.asarray(m) for n, m in named_kernels(ticket.variables.masks).items()}
    dense = patterns.dense_layers("2:4", {n: m.shape for n, m in masks.items()})
    assert dense == (model.encoding_layer,)  # digits: 1 input channel
    for n, w in trained.items():
        expected = np.ones(w.shape) if n in dense else numpy_n_of_m(np.abs(np.asarray(w)), 2, 4)
        np.testing.assert_array_equal(masks[n], expected, err_msg=n)
        assert entry["layer_sparsity"][n] == (0.0 if n in dense else 0.5)
    assert_cost_report_counts_the_mask(entry, masks)


def test_edge_popup_level_with_two_of_four(tmp_path, digits_edge_popup):
    ds, config, model, trainer = digits_edge_popup  # the session's small setup (tests/small_data.py)
    options = eps.EdgePopupOptions(sparsities=(0.5,), sparsity_type="2:4", dense_classifier=True)
    results = eps.run(config, options, str(tmp_path), trainer=trainer, outputs=Outputs(plots=False))
    assert results["sparsity_type"] == "2:4"
    entry = results["runs"][0]
    ticket = load_ticket(str(Path(level_dir(str(tmp_path), 0.5)) / TICKET_FILE))
    masks = {n: np.asarray(m) for n, m in named_kernels(ticket.variables.masks).items()}
    dense = {model.encoding_layer, model.classifier_layer}  # 1 input channel; --dense-classifier
    check_pattern(ticket.variables.masks, "2:4", dense=dense)
    for n, m in masks.items():
        assert entry["layer_sparsity"][n] == (0.0 if n in dense else 0.5), n
        if n not in dense:
            ones = np.moveaxis(m, -2, -1).reshape(-1, 4).sum(1)
            assert (ones == 2).all(), n
    assert_cost_report_counts_the_mask(entry, masks)
