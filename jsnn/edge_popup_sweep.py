"""Edge-popup over a list of sparsities (paper Sec. 5, SPEC §3): one resumable run per level.

Each level trains only the scores of a randomly initialised SNN whose weights
never change, in WORKDIR/sparsity_0.50/ etc.; WORKDIR/results.json collects
one entry per level and WORKDIR/accuracy_vs_sparsity.png plots them (paper
Fig. 3 style), with the dense weight-trained network as a reference line.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from jsnn import plots
from jsnn.config import TrainConfig
from jsnn.dense import dense_signature, train_dense
from jsnn import controls
from jsnn.methods import EdgePopup, MaskedTraining
from jsnn.parallel import put_replicated
from jsnn.sparsity.stats import recalibrate_batch_stats
from jsnn.metrics import log, read_json, read_jsonl, write_json
from jsnn.run import (CONFIG, METRICS, RESULTS, check_same_run, claim_workdir, prepare, run_signature,
                      train_resumable)
from jsnn.sparsity.edge_popup import init_scores
from jsnn.sparsity import distributions
from jsnn.sparsity.masks import check_sparsity, layer_sparsity_of, sparsity_of
from jsnn.efficiency.report import entries_figure
from jsnn.ticket import TICKET_FILE, record_ticket
from jsnn.variables import init_variables, kernels, named_kernels


@dataclasses.dataclass(frozen=True)
class EdgePopupOptions:
    sparsities: tuple[float, ...] = (0.5,)  # fraction REMOVED per layer (0.9 keeps 10%)
    dense_encoding: bool = False  # keep the first (encoding) layer dense; edge-popup masks it by default
    dense_classifier: bool = False  # keep the last linear layer dense
    dense_baseline: str | None = None  # "train": train one in WORKDIR/dense; or a directory holding results.json
    distribution: str = "uniform"  # per-layer targets: uniform (edge-popup's) or erk (jsnn/sparsity/distributions.py)
    control: str | None = None  # "random": a random mask of each level's per-layer sparsity, same frozen weights,
    #                             BN statistics recalibrated on training data: the floor the search must beat

    # not part of a level's signature: a sweep may add levels, and the baseline is only a reference line
    RUN_CONTROL = ("sparsities", "dense_baseline")

    def __post_init__(self):
        if not self.sparsities:
            raise ValueError("give at least one sparsity")
        for s in self.sparsities:
            check_sparsity(s)
        if self.distribution not in distributions.SHAPE_DENSITIES:
            raise ValueError(f"edge-popup's per-layer targets come from the layer shapes: --distribution must be "
                             f"one of {sorted(distributions.SHAPE_DENSITIES)}, got {self.distribution!r}")
        if self.control not in (None, "random"):
            raise ValueError(f"edge-popup's --control is 'random' (a random mask as the floor), got {self.control!r}")


def level_dir(workdir: str, sparsity: float) -> str:
    return os.path.join(workdir, f"sparsity_{sparsity:.2f}")


def level_targets(model, weights, sparsity: float, options: EdgePopupOptions) -> tuple:
    """((layer path, fraction removed), ...) of one level: the distribution's targets, dense layers at 0."""
    dense = {model.encoding_layer} if options.dense_encoding else set()
    dense |= {model.classifier_layer} if options.dense_classifier else set()
    shapes = {name: k.shape for name, k in named_kernels(weights).items()}
    return tuple(distributions.layer_targets(options.distribution, shapes, sparsity, tuple(dense)).items())


def level_signature(config: TrainConfig, options: EdgePopupOptions, sparsity: float) -> dict:
    return run_signature("edge_popup", config, options, sparsity=sparsity)


def run_level(config: TrainConfig, workdir: str, sparsity: float, options: EdgePopupOptions,
              prepared=None) -> dict:
    """Searches one sparsity level; returns its results entry (and writes it to its directory)."""
    out_dir = level_dir(workdir, sparsity)
    sig = level_signature(config, options, sparsity)
    done = read_json(os.path.join(out_dir, RESULTS))
    if done is not None:
        check_same_run(done.get("signature", {}), sig, out_dir)
        log(f"sparsity {sparsity:.2f}: already complete in {out_dir}")
        return done["runs"][0]
    if prepared is None:
        prepared = prepare(config, out_dir, sig)
    else:
        claim_workdir(out_dir, sig, dataclasses.asdict(config))
    dataset, model, trainer = prepared
    key_weights, key_scores = jax.random.split(jax.random.key(config.seed))
    variables = init_variables(model, key_weights, (1,) + dataset.image_shape)
    scores = init_scores(key_scores, kernels(variables.weights))
    method = EdgePopup(level_targets(model, variables.weights, sparsity, options))
    if options.control == "random":
        return random_floor(config, out_dir, sparsity, trainer, variables, method, sig)
    initial_weights = jax.tree.map(np.array, variables.weights)  # host copy: the step donates its input
    state = trainer.new_state(variables, scores, method, config.seed)
    state = train_resumable(trainer, out_dir, state, method, sig, label={"sparsity_target": sparsity})
    unchanged = all(np.array_equal(np.asarray(a), np.asarray(b))
                    for a, b in zip(jax.tree.leaves(state.weights), jax.tree.leaves(initial_weights)))
    if not unchanged:  # edge-popup must never train the weights; fail loudly if it did
        raise AssertionError("edge-popup changed the frozen weights")
    masks = method.effective_masks(state.masks, state.scores)
    entry = {"sparsity_target": sparsity, "sparsity": sparsity_of(masks), "layer_sparsity": layer_sparsity_of(masks),
             **trainer.evaluate(state, method), "weights_unchanged": unchanged, "epochs": config.epochs}
    entry = record_ticket(os.path.join(out_dir, TICKET_FILE), config, dataset.num_classes, state, method, entry,
                          dataset)
    write_json(os.path.join(out_dir, RESULTS), {"method": "edge_popup", "runs": [entry], "signature": sig})
    plots.training_curves(read_jsonl(os.path.join(out_dir, METRICS)), os.path.join(out_dir, "training_curves.png"),
                          title=f"edge-popup, sparsity {sparsity:.2f}")
    return entry


def random_floor(config: TrainConfig, out_dir: str, sparsity: float, trainer, variables, method: EdgePopup,
                 sig: dict) -> dict:
    """The level's random-mask control: the search's frozen weights under a uniformly random mask with
    the level's per-layer kept counts (edge-popup's top-k of i.i.d. random scores), BN running
    statistics recalibrated on the training set; nothing is trained."""
    key = jax.random.fold_in(jax.random.key(config.seed + controls.RESEED), int(round(sparsity * 1e6)))
    random_scores = init_scores(key, kernels(variables.weights))
    masks = method.effective_masks(None, random_scores)
    fixed = MaskedTraining(trainable=())
    state = trainer.new_state(variables._replace(masks=masks), {}, fixed, config.seed)
    state = state.replace(batch_stats=recalibrate_batch_stats(trainer, state, fixed, seed=config.seed))
    state = put_replicated(trainer.mesh, state)
    entry = {"sparsity_target": sparsity, "sparsity": sparsity_of(masks), "layer_sparsity": layer_sparsity_of(masks),
             **trainer.evaluate(state, fixed), "control": "random", "epochs": 0}
    write_json(os.path.join(out_dir, RESULTS), {"method": "edge_popup", "control": "random", "runs": [entry],
                                               "signature": sig})
    return entry


# What makes a dense network the same architecture as the one it is the baseline for.
ARCHITECTURE_KEYS = ("dataset", "model", "width", "timesteps", "decay", "threshold", "reset")


def dense_baseline(config: TrainConfig, workdir: str, source: str | None) -> dict | None:
    """Test accuracy of the dense weight-trained network of the same architecture."""
    if source is None:
        return None
    # same architecture, T and batch; the dense preset's lr, epochs and affine BN
    dense_config = dataclasses.replace(config, lr=None, epochs=None, bn_affine=None).resolve("dense")
    if source != "train":
        found = read_json(os.path.join(source, RESULTS))
        if not found or not found.get("runs") or found.get("method") != "dense":
            raise FileNotFoundError(f"--dense-baseline {source}: no dense {RESULTS} there; "
                                    "pass a directory written by train/dense.py, or 'train'")
        written_by = (read_json(os.path.join(source, CONFIG)) or {}).get("signature", {})
        check_same_run(written_by, dense_signature(dense_config), f"--dense-baseline {source}",
                       keys=ARCHITECTURE_KEYS)
        return {"test_accuracy": found["runs"][0]["test_accuracy"], "source": os.path.abspath(source)}
    out_dir = os.path.join(workdir, "dense")
    entry = train_dense(dense_config, out_dir)
    return {"test_accuracy": entry["test_accuracy"], "source": out_dir}


def run(config: TrainConfig, workdir: str, options: EdgePopupOptions) -> dict:
    """The whole sweep; returns (and writes) WORKDIR/results.json."""
    runs = []
    prepared = None
    for s in options.sparsities:
        if prepared is None and read_json(os.path.join(level_dir(workdir, s), RESULTS)) is None:
            prepared = prepare(config, workdir, run_signature("edge_popup", config, options),
                               {"edge_popup": dataclasses.asdict(options)})
        runs.append(run_level(config, workdir, s, options, prepared))
        write_json(os.path.join(workdir, RESULTS), {"method": "edge_popup", "runs": runs})
    baseline = dense_baseline(config, workdir, options.dense_baseline)
    results = {"method": "edge_popup", "dataset": config.dataset, "model": config.model, "runs": runs,
               "dense_baseline": baseline, "control": options.control, "distribution": options.distribution}
    write_json(os.path.join(workdir, RESULTS), results)
    plots.accuracy_vs_sparsity(
        {f"edge-popup ({config.model}){', random-mask floor' if options.control else ''}":
         [[(r["sparsity"], r["test_accuracy"]) for r in runs]]},
        os.path.join(workdir, "accuracy_vs_sparsity.png"),
        dense_accuracy=baseline["test_accuracy"] if baseline else None,
        title=f"edge-popup on {config.dataset}, T = {config.timesteps}")
    entries_figure({f"edge-popup ({config.model})": [runs]}, os.path.join(workdir, "accuracy_vs_energy.png"),
                   title=f"edge-popup on {config.dataset}, T = {config.timesteps}")
    for r in runs:
        log(f"sparsity {r['sparsity']:.4f}: test accuracy {r['test_accuracy']:.4f}")
    if baseline:
        log(f"dense baseline: test accuracy {baseline['test_accuracy']:.4f}")
    return results
