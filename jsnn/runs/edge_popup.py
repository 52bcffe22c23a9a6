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
from jsnn.methods import EdgePopup, MaskedTraining
from jsnn.metrics import log, read_json, write_json
from jsnn.parallel import put_replicated
from jsnn.runs.controls import RESEED
from jsnn.runs.dense import dense_signature, train_dense
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.results import entries_figure
from jsnn.runs.run import OneSegmentPlan, Run
from jsnn.runs.segment import prepare
from jsnn.runs.tickets import level_dir
from jsnn.runs.workdir import (
    CONFIG,
    RESULTS,
    check_same_run,
    claim_workdir,
    finished_results,
    release_workdir,
    run_signature,
)
from jsnn.sparsity import distributions, patterns
from jsnn.sparsity.edge_popup import init_scores
from jsnn.sparsity.masks import check_sparsity, layer_sparsity_of, sparsity_of
from jsnn.sparsity.stats import recalibrate_batch_stats
from jsnn.trainer import Trainer
from jsnn.variables import init_variables, kernels, named_kernels

LABEL = "edge-popup"


@dataclasses.dataclass(frozen=True)
class EdgePopupOptions:
    sparsities: tuple[float, ...] = (0.5,)  # fraction REMOVED per layer (0.9 keeps 10%)
    dense_encoding: bool = False  # keep the first (encoding) layer dense; edge-popup masks it by default
    dense_classifier: bool = False  # keep the last linear layer dense
    dense_baseline: str | None = None  # "train": train one in WORKDIR/dense; or a directory holding results.json
    distribution: str = "uniform"  # per-layer targets: uniform (edge-popup's) or erk (jsnn/sparsity/distributions.py)
    control: str | None = None  # "random": a random mask of each level's per-layer sparsity, same frozen weights,
    #                             BN statistics recalibrated on training data: the floor the search must beat
    # the pattern the top-k keeps (jsnn/sparsity/patterns.py): unstructured | channel (each layer's count rounded
    # to whole output channels) | N:M (e.g. 2:4: every masked layer at n / m, so the one level is 1 - n/m).
    # In the signature only when not unstructured (older runs keep theirs)
    sparsity_type: str = patterns.UNSTRUCTURED

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
        object.__setattr__(self, "sparsity_type", patterns.canonical(self.sparsity_type))
        fixed = patterns.fixed_density(self.sparsity_type)
        if fixed is not None:
            if any(abs(s - (1.0 - fixed)) > 1e-9 for s in self.sparsities):
                kept = self.sparsity_type.replace(":", " of ")
                raise ValueError(f"--sparsity-type {self.sparsity_type} keeps {kept} weights in every masked layer: "
                                 f"its one level is --sparsity {1.0 - fixed:g}, got "
                                 f"{', '.join(f'{s:g}' for s in self.sparsities)}")
            if self.distribution != "uniform":
                raise ValueError(f"--sparsity-type {self.sparsity_type} fixes each layer's density; "
                                 f"--distribution {self.distribution} does not apply")


def layer_targets(model, weights, sparsity: float, options: EdgePopupOptions) -> tuple:
    """((layer path, fraction removed), ...) of one level: the distribution's targets, dense layers at 0."""
    dense = {model.encoding_layer} if options.dense_encoding else set()
    dense |= {model.classifier_layer} if options.dense_classifier else set()
    shapes = {name: k.shape for name, k in named_kernels(weights).items()}
    return tuple(distributions.layer_targets(options.distribution, shapes, sparsity, tuple(dense)).items())


def level_signature(config: TrainConfig, options: EdgePopupOptions, sparsity: float) -> dict:
    """A level's signature; the sparsity type enters only when it is not unstructured."""
    return patterns.without_default(run_signature("edge_popup", config, options, sparsity=sparsity))


def sweep_signature(config: TrainConfig, options: EdgePopupOptions) -> dict:
    return patterns.without_default(run_signature("edge_popup", config, options))


def edge_popup_method(model, weights, sparsity: float, options: EdgePopupOptions) -> EdgePopup:
    """The level's method: the distribution's per-layer targets, the top-k in the options' pattern."""
    return EdgePopup(layer_targets(model, weights, sparsity, options), sparsity_type=options.sparsity_type)


def check_level_pattern(method: EdgePopup, masks) -> None:
    """A structured level's masks keep their pattern (layers at sparsity 0 dense); unstructured: nothing."""
    if method.sparsity_type != patterns.UNSTRUCTURED:
        patterns.check_pattern(masks, method.sparsity_type, dense={n for n, s in method.sparsities if s == 0.0})


class EdgePopupLevel(OneSegmentPlan):
    """One sparsity level: one segment training the scores of frozen random weights."""

    name, label = "edge_popup", LABEL

    def __init__(self, config: TrainConfig, options: EdgePopupOptions, sparsity: float):
        self.config, self.options, self.sparsity = config, options, sparsity
        self.signature = level_signature(config, options, sparsity)
        self.method: EdgePopup | None = None
        self.initial_weights = None

    def setup(self, run: Run):
        key_weights, key_scores = jax.random.split(jax.random.key(self.config.seed))
        variables = init_variables(run.model, key_weights, (1,) + run.dataset.image_shape)
        scores = init_scores(key_scores, kernels(variables.weights))
        self.method = edge_popup_method(run.model, variables.weights, self.sparsity, self.options)
        note = patterns.dense_note(self.options.sparsity_type,
                                   {n: k.shape for n, k in named_kernels(variables.weights).items()})
        if note:
            log(note)
        self.initial_weights = jax.tree.map(np.array, variables.weights)  # host copy: the step donates its input
        return run.trainer.new_state(variables, scores, self.method, self.config.seed)

    def segment_label(self, segment):
        return {"sparsity_target": self.sparsity}

    def entry(self, run: Run, state, segment):
        unchanged = all(np.array_equal(np.asarray(a), np.asarray(b))
                        for a, b in zip(jax.tree.leaves(state.weights), jax.tree.leaves(self.initial_weights)))
        if not unchanged:  # edge-popup must never train the weights; fail loudly if it did
            raise AssertionError("edge-popup changed the frozen weights")
        masks = self.method.effective_masks(state.masks, state.scores)
        check_level_pattern(self.method, masks)  # the ticket keeps the pattern
        return {"sparsity_target": self.sparsity, "sparsity": sparsity_of(masks),
                "layer_sparsity": layer_sparsity_of(masks), "weights_unchanged": unchanged,
                "epochs": self.config.epochs}

    def figures(self, run: Run, results):
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"),
                              title=f"edge-popup, sparsity {self.sparsity:.2f}")


def run_level(config: TrainConfig, workdir: str, sparsity: float, options: EdgePopupOptions,
              trainer: Trainer | None = None, *, outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """Searches one sparsity level in WORKDIR/sparsity_S; returns its results entry."""
    out_dir = level_dir(workdir, sparsity)
    if options.control == "random":
        return random_floor(config, out_dir, sparsity, options, trainer)
    plan = EdgePopupLevel(config, options, sparsity)
    return Run(plan, config, out_dir, trainer=trainer, outputs=outputs, hooks=hooks).execute()["runs"][0]


def random_floor(config: TrainConfig, out_dir: str, sparsity: float, options: EdgePopupOptions,
                 trainer: Trainer | None = None) -> dict:
    """The level's random-mask control: the search's frozen weights under a uniformly random mask with
    the level's per-layer kept counts (edge-popup's top-k of i.i.d. random scores), BN running
    statistics recalibrated on the training set; nothing is trained."""
    sig = level_signature(config, options, sparsity)
    done = finished_results(out_dir, sig)
    if done is not None:
        log(f"sparsity {sparsity:.2f}: already complete in {out_dir}")
        return done["runs"][0]
    if trainer is None:
        _, _, trainer = prepare(config, out_dir, sig)
    else:
        claim_workdir(out_dir, sig, config.to_dict())
    try:
        return _random_floor_entry(config, out_dir, sparsity, options, trainer, sig)
    finally:
        release_workdir(out_dir)


def _random_floor_entry(config, out_dir, sparsity, options, trainer, sig) -> dict:
    key_weights, _ = jax.random.split(jax.random.key(config.seed))
    variables = init_variables(trainer.model, key_weights, (1,) + trainer.dataset.image_shape)
    method = edge_popup_method(trainer.model, variables.weights, sparsity, options)
    key = jax.random.fold_in(jax.random.key(config.seed + RESEED), int(round(sparsity * 1e6)))
    random_scores = init_scores(key, kernels(variables.weights))
    masks = method.effective_masks(None, random_scores)
    check_level_pattern(method, masks)
    fixed = MaskedTraining(trainable=())
    state = trainer.new_state(variables._replace(masks=masks), {}, fixed, config.seed)
    state = state.replace(batch_stats=recalibrate_batch_stats(trainer, state, fixed, seed=config.seed))
    state = put_replicated(trainer.mesh, state)
    label = f"{LABEL}, random-mask floor"
    entry = {"sparsity_target": sparsity, "sparsity": sparsity_of(masks), "layer_sparsity": layer_sparsity_of(masks),
             **trainer.evaluate(state, fixed), "control": "random", "epochs": 0,
             "label": f"sparsity {sparsity:.2f}", "method_label": label}
    write_json(os.path.join(out_dir, RESULTS), {"method": "edge_popup", "label": label, "control": "random",
                                               "runs": [entry], "signature": sig})
    return entry


# What makes a dense network the same architecture as the one it is the baseline for.
ARCHITECTURE_KEYS = ("dataset", "model", "width", "timesteps", "decay", "threshold", "reset")


def dense_baseline(config: TrainConfig, workdir: str, source: str | None, *, outputs: Outputs = Outputs(),
                   hooks: RunHooks = RunHooks()) -> dict | None:
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
    entry = train_dense(dense_config, out_dir, outputs=outputs, hooks=hooks)
    return {"test_accuracy": entry["test_accuracy"], "source": out_dir}


def sweep_label(config: TrainConfig, options: EdgePopupOptions) -> str:
    kind = f", {options.sparsity_type}" if options.sparsity_type != patterns.UNSTRUCTURED else ""
    return f"{LABEL} ({config.model}){kind}{', random-mask floor' if options.control else ''}"


def run(config: TrainConfig, workdir: str, options: EdgePopupOptions, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """The whole sweep; returns (and writes) WORKDIR/results.json."""
    try:
        return _sweep(config, workdir, options, trainer, outputs, hooks)
    finally:
        release_workdir(workdir)  # held if this sweep trained a level (``prepare`` claims the sweep's workdir)


def _sweep(config, workdir, options, trainer, outputs, hooks) -> dict:
    label = sweep_label(config, options)
    runs = []
    for s in options.sparsities:
        if trainer is None and read_json(os.path.join(level_dir(workdir, s), RESULTS)) is None:
            _, _, trainer = prepare(config, workdir, sweep_signature(config, options),
                                    {"edge_popup": patterns.without_default(dataclasses.asdict(options))})
        runs.append(run_level(config, workdir, s, options, trainer, outputs=outputs, hooks=hooks))
        write_json(os.path.join(workdir, RESULTS), {"method": "edge_popup", "label": label, "runs": runs})
    baseline = dense_baseline(config, workdir, options.dense_baseline, outputs=outputs, hooks=hooks)
    results = patterns.without_default(
        {"method": "edge_popup", "label": label, "dataset": config.dataset, "model": config.model, "runs": runs,
         "dense_baseline": baseline, "control": options.control, "distribution": options.distribution,
         "sparsity_type": options.sparsity_type})
    hooks.phase("results")
    write_json(os.path.join(workdir, RESULTS), results)
    if outputs.plots:
        hooks.phase("plots")
        title = f"edge-popup on {config.dataset}, T = {config.timesteps}"
        plots.accuracy_vs_sparsity({label: [[(r["sparsity"], r["test_accuracy"]) for r in runs]]},
                                   os.path.join(workdir, "accuracy_vs_sparsity.png"),
                                   dense_accuracy=baseline["test_accuracy"] if baseline else None, title=title)
        entries_figure({f"{LABEL} ({config.model})": [runs]}, os.path.join(workdir, "accuracy_vs_energy.png"),
                       title=title)
    for r in runs:
        log(f"sparsity {r['sparsity']:.4f}: test accuracy {r['test_accuracy']:.4f}")
    if baseline:
        log(f"dense baseline: test accuracy {baseline['test_accuracy']:.4f}")
    return results
