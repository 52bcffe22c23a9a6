"""One-shot pruning at initialisation (train/sparse_training.py --algorithm static; runs/sparse_training.py).

SNIP's scores are checked against |w * dL/dw| with the gradient computed here, batch by batch, with
``jax.grad`` of the loss written here (float64 accumulation); the kept set against a NumPy top-k of
the criterion's scores (one global ranking, or per-layer counts of ERK); the training run against the
mask it started from.
"""
import dataclasses
import math

import jax
import numpy as np
import pytest
import scipy.stats

from jsnn import data as jdata
from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.objective import preprocess, spike_loss
from jsnn.runs import registry, sparse_training
from jsnn.runs.outputs import Outputs
from jsnn.runs.sparse_training import SparseTrainingOptions, masks_at_init
from jsnn.sparsity import criteria, distributions
from jsnn.ticket import load_ticket
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import Variables, apply_model, by_name, init_variables, kernels, with_kernels
from tests.small_data import digits_subset

CALIBRATION = 2


@pytest.fixture(scope="module")
def small():
    ds = digits_subset(192, 64)
    config = TrainConfig(timesteps=2, epochs=1, batch_size=64, width=0.25, progress=False).resolve("sparse_training")
    trainer = Trainer(config, build_model(config, ds.num_classes), ds)
    v = init_variables(trainer.model, jax.random.key(config.seed), (1,) + ds.image_shape)
    state = trainer.new_state(v, {}, MaskedTraining(), config.seed)
    return config, ds, trainer, state


def reference_gradients(trainer, state, batches, seed):
    """Mean over the first ``batches`` training batches (epoch 0's order) of dL/dkernel (float64 sum)."""
    d = trainer.dataset

    @jax.jit
    def gradient(ks, images, labels):
        x = preprocess(images, d.mean, d.std)

        def loss(ks):
            variables = Variables(with_kernels(state.weights, ks), state.masks, state.bn, state.batch_stats)
            logits, _, _ = apply_model(trainer.model, variables, x, train=False)
            return spike_loss(logits, labels)

        return jax.grad(loss)(ks)

    total, n = None, 0
    for i, (images, labels) in enumerate(jdata.train_batches(d.train_images, d.train_labels,
                                                              trainer.config.batch_size, seed, epoch=0)):
        if i >= batches:
            break
        g = {n_: np.asarray(a, np.float64) for n_, a in by_name(gradient(kernels(state.weights), images,
                                                                          labels)).items()}
        total = g if total is None else {k: total[k] + g[k] for k in g}
        n += 1
    return {k: v / n for k, v in total.items()}


def numpy_top_k(scores: dict, counts: dict | int) -> dict:
    """{layer: 0/1 mask}: the largest scores kept, ties to the later index (a stable ascending sort's tail);
    ``counts`` an int ranks every layer together (in the layers' sorted order), a dict each layer alone."""
    names = sorted(scores)
    if isinstance(counts, int):
        flat = np.concatenate([scores[n].reshape(-1) for n in names])
        keep = np.zeros(flat.size, np.float32)
        keep[np.argsort(flat, kind="stable")[flat.size - counts:]] = 1
        out, start = {}, 0
        for n in names:
            out[n] = keep[start:start + scores[n].size].reshape(scores[n].shape)
            start += scores[n].size
        return out
    out = {}
    for n in names:
        flat = scores[n].reshape(-1)
        keep = np.zeros(flat.size, np.float32)
        keep[np.argsort(flat, kind="stable")[flat.size - counts[n]:]] = 1
        out[n] = keep.reshape(scores[n].shape)
    return out


def test_snip_scores_and_global_top_k(small):
    config, ds, trainer, state = small
    options = SparseTrainingOptions(algorithm="static", criterion="snip", sparsity=0.9,
                                    calibration_batches=CALIBRATION).resolve(config)
    assert options.distribution == "global"  # SNIP ranks all connections at once (Lee et al.)
    reference = reference_gradients(trainer, state, CALIBRATION, config.seed)
    weights = {n: np.asarray(w) for n, w in by_name(kernels(state.weights)).items()}
    expected_scores = {n: np.abs(weights[n] * reference[n]) for n in weights}
    calibration = criteria.Calibration(trainer, state, MaskedTraining(), CALIBRATION, config.seed)
    scores = {n: np.asarray(s) for n, s in by_name(criteria.scores(
        "snip", state.weights, criteria.gather_inputs("snip", calibration))).items()}
    for n in weights:
        np.testing.assert_allclose(scores[n], expected_scores[n], rtol=1e-4, atol=1e-9)
        assert np.count_nonzero(scores[n]) > 0
    total = sum(w.size for w in weights.values())
    keep = int(round(total * 0.1))
    masks = {n: np.asarray(m) for n, m in by_name(masks_at_init(trainer, state, options, config.seed)).items()}
    expected = numpy_top_k(scores, keep)
    assert sum(int(m.sum()) for m in masks.values()) == keep
    for n in masks:
        np.testing.assert_array_equal(masks[n], expected[n], err_msg=n)
    # the ranking is global: the layers end at different densities
    assert len({round(float(m.mean()), 3) for m in masks.values()}) > 1


def erk_reference(shapes: dict, density: float) -> dict:
    """ERK's per-layer densities (Evci et al. 2020) solved here by bisection: the densities
    min(1, eps * sum(shape) / prod(shape)) whose kept weights add up to ``density`` of all weights."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}

    def kept(eps):
        return sum(min(1.0, eps * raw[n]) * sizes[n] for n in sizes)

    lo, hi = 0.0, 1.0 / min(raw.values())  # at hi every layer is dense
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < density * sum(sizes.values()) else (lo, mid)
    return {n: min(1.0, hi * raw[n]) for n in sizes}


def test_erk_reference_by_hand():
    # two layers: a 3x3x1x8 conv (raw 15/72) and a 128x10 dense (raw 138/1280); at density 0.5 neither
    # is dense: eps (15 + 138) = 0.5 (72 + 1280) gives eps = 676/153
    d = erk_reference({"a": (3, 3, 1, 8), "b": (128, 10)}, 0.5)
    assert d["a"] == pytest.approx(676 / 153 * 15 / 72) and d["b"] == pytest.approx(676 / 153 * 138 / 1280)
    assert distributions.erk_densities({"a": (3, 3, 1, 8), "b": (128, 10)}, 0.5) == pytest.approx(d)


def test_random_erk_counts_and_top_k_of_its_scores(small):
    config, ds, trainer, state = small
    options = SparseTrainingOptions(algorithm="static", criterion="random", sparsity=0.8,
                                    distribution="erk").resolve(config)
    masks = {n: np.asarray(m) for n, m in by_name(masks_at_init(trainer, state, options, config.seed)).items()}
    shapes = {n: m.shape for n, m in masks.items()}
    densities = erk_reference(shapes, 0.2)
    assert any(d == 1.0 for d in densities.values()) and any(d < 1.0 for d in densities.values())  # both cases
    counts = {n: max(1, int(round(densities[n] * math.prod(s)))) for n, s in shapes.items()}  # jsnn's rounding
    calibration = criteria.Calibration(trainer, state, MaskedTraining(), 1, config.seed)
    scores = {n: np.asarray(s) for n, s in by_name(criteria.scores(
        "random", state.weights, criteria.gather_inputs("random", calibration))).items()}
    # the random criterion's scores are i.i.d. U[0, 1): uniform by a Kolmogorov-Smirnov test,
    # unrelated to the weights' magnitudes, and another seed draws others
    flat = np.concatenate([scores[n].reshape(-1) for n in sorted(scores)])
    assert flat.min() >= 0.0 and flat.max() < 1.0
    assert scipy.stats.kstest(flat, "uniform").pvalue > 1e-3
    magnitudes = by_name(kernels(state.weights))
    weights = np.concatenate([np.abs(np.asarray(magnitudes[n])).reshape(-1) for n in sorted(scores)])
    assert abs(scipy.stats.spearmanr(flat, weights).statistic) < 0.1
    other = criteria.Calibration(trainer, state, MaskedTraining(), 1, config.seed + 1)
    other_scores = by_name(criteria.scores("random", state.weights, criteria.gather_inputs("random", other)))
    assert all(not np.array_equal(np.asarray(other_scores[n]), scores[n]) for n in scores)
    expected = numpy_top_k(scores, counts)
    for n in masks:
        assert int(masks[n].sum()) == counts[n], n
        np.testing.assert_array_equal(masks[n], expected[n], err_msg=n)


def test_static_run_keeps_its_mask_and_zeros(small, tmp_path):
    config, ds, trainer, state = small
    config = dataclasses.replace(config, epochs=2)
    options = SparseTrainingOptions(algorithm="static", criterion="snip", sparsity=0.9,
                                    calibration_batches=CALIBRATION)
    initial = masks_at_init(trainer, state, options.resolve(config), config.seed)
    results = registry.run_method("sparse_training", config, options, str(tmp_path / "snip"), trainer=trainer,
                                  outputs=Outputs(plots=False, cost_report=False))
    entry = results["runs"][0]
    assert results["label"] == "SNIP (global)" and entry["criterion"] == "snip"
    assert entry["pruned_nonzero_weights"] == 0
    ticket = load_ticket(str(tmp_path / "snip" / "ticket.npz"))
    masks, weights = by_name(ticket.variables.masks), by_name(kernels(ticket.variables.weights))
    for n, m in by_name(initial).items():
        np.testing.assert_array_equal(np.asarray(masks[n]), np.asarray(m), err_msg=n)  # never changed
        w = np.asarray(weights[n])
        assert np.all(w[np.asarray(m) == 0] == 0)  # pruned weights exactly zero after training
        assert np.any(w[np.asarray(m) > 0] != np.asarray(by_name(kernels(state.weights))[n])[np.asarray(m) > 0])
    kept = sum(int(np.asarray(m).sum()) for m in masks.values())
    total = sum(np.asarray(m).size for m in masks.values())
    assert entry["sparsity"] == pytest.approx(1 - kept / total) and kept == round(0.1 * total)
    assert results["signature"]["criterion"] == "snip"


def test_signatures_and_the_program():
    config = TrainConfig(timesteps=2).resolve("sparse_training")
    rigl = sparse_training.signature_of(config, SparseTrainingOptions().resolve(config))
    assert "criterion" not in rigl and "calibration_batches" not in rigl and rigl["distribution"] == "erk"
    static = sparse_training.signature_of(config, SparseTrainingOptions(algorithm="static").resolve(config))
    assert static["criterion"] == "snip" and static["distribution"] == "global"
    with pytest.raises(ValueError, match="--distribution"):
        SparseTrainingOptions(algorithm="set", distribution="global").resolve(config)
    with pytest.raises(ValueError, match="criterion"):
        SparseTrainingOptions(algorithm="static", criterion="nope").resolve(config)
    from tests.test_sparse_training import flags, program

    args = program.parser().parse_args(["--algorithm", "static", "--criterion", "random", "--sparsity", "0.8"])
    options = flags.options_of(args, SparseTrainingOptions).resolve(config)
    assert (options.algorithm, options.criterion, options.distribution) == ("static", "random", "global")
