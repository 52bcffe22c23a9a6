"""Edge-popup over a list of sparsities (paper Sec. 5): one resumable run per level.

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
from jsnn.config import EDGE_POPUP_SPARSITIES, TrainConfig, setting, with_option_presets
from jsnn.metrics import log, read_json
from jsnn.parallel import put_replicated
from jsnn.runs.controls import RESEED
from jsnn.runs.dense import dense_signature, train_dense
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.results import entries_figure
from jsnn.runs.run import Plan, Run
from jsnn.runs.tickets import level_dir, level_name
from jsnn.runs.workdir import CONFIG, RESULTS, check_same_run
from jsnn.sparsity import distributions, patterns
from jsnn.sparsity.masks import check_sparsity, layer_sparsity_of, sparsity_of
from jsnn.sparsity.score_masks import init_scores
from jsnn.sparsity.stats import recalibrate_batch_stats
from jsnn.trainer import Trainer
from jsnn.training_rules import EdgePopup, MaskedTraining, masks_in_use
from jsnn.variables import init_variables, kernels, named_kernels

NAME, LABEL = "edge_popup", "edge-popup"


GROUP = "edge-popup"
_LEVELS = {family: ",".join(f"{s:g}" for s in v) for family, v in EDGE_POPUP_SPARSITIES.items()}


@dataclasses.dataclass(frozen=True)
class EdgePopupOptions:
    """Edge-popup's own settings; ``train/edge_popup.py`` has one flag per field (``train/flags.py``)."""

    # fraction REMOVED per layer (0.9 keeps 10%); None: the dataset's levels (METHOD_PRESETS), or N:M's one level
    sparsities: tuple[float, ...] | None = setting(
        None, "fraction of weights REMOVED per layer, one value or a list (default: digits "
        f"{_LEVELS['digits']}; CIFAR {_LEVELS['cifar']}, the paper's sweep)", group=GROUP, flag="--sparsity")
    dense_encoding: bool = setting(False, "keep the first conv dense", group=GROUP)  # edge-popup masks it by default
    dense_classifier: bool = setting(False, "keep the last linear layer dense", group=GROUP)
    # "train": train one in WORKDIR/dense; or a directory holding results.json
    dense_baseline: str | None = setting(None, "'train' to train the dense network too, or its workdir", group=GROUP)
    # per-layer targets: uniform (edge-popup's) or erk (jsnn/sparsity/distributions.py)
    distribution: str = setting("uniform", "per-layer sparsity: uniform (edge-popup's) or erk (Evci et al. 2020) at "
                                "the same total", group=GROUP, choices="shape_distributions")
    # "random": a random mask of each level's per-layer sparsity, same frozen weights, BN statistics recalibrated
    # on training data: the floor the search must beat
    control: str | None = setting(None, "random: no search; a random mask of each level's per-layer sparsity on the "
                                  "same frozen weights, BN statistics recalibrated on the training set (the floor "
                                  "the search must beat)", group=GROUP, choices=("random",))
    # the pattern the top-k keeps (jsnn/sparsity/patterns.py): unstructured | channel (each layer's count rounded
    # to whole output channels) | N:M (e.g. 2:4: every masked layer at n / m, so the one level is 1 - n/m).
    # In the signature only when not unstructured (older runs keep theirs)
    sparsity_type: str = setting(
        patterns.UNSTRUCTURED, "the pattern the top-k keeps: unstructured (any weights), channel (whole output "
        "channels; each layer's count rounded to whole channels) or N:M, e.g. 2:4 (n of every m weights along the "
        "input axis; one level, --sparsity 1 - n/m, the default then)", group=GROUP, parse=patterns.flag_value,
        metavar="|".join(patterns.sparsity_type_names()))

    # not part of a level's signature: a sweep may add levels, and the baseline is only a reference line
    RUN_CONTROL = ("sparsities", "dense_baseline")

    def __post_init__(self):
        if self.sparsities is not None:
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
            if self.sparsities is not None and any(abs(s - (1.0 - fixed)) > 1e-9 for s in self.sparsities):
                kept = self.sparsity_type.replace(":", " of ")
                raise ValueError(f"--sparsity-type {self.sparsity_type} keeps {kept} weights in every masked layer: "
                                 f"its one level is --sparsity {1.0 - fixed:g}, got "
                                 f"{', '.join(f'{s:g}' for s in self.sparsities)}")
            if self.distribution != "uniform":
                raise ValueError(f"--sparsity-type {self.sparsity_type} fixes each layer's density; "
                                 f"--distribution {self.distribution} does not apply")

    def resolve(self, config: TrainConfig) -> "EdgePopupOptions":
        """The levels filled in: N:M's one level, else the dataset's preset."""
        if self.sparsities is not None:
            return self
        fixed = patterns.fixed_density(self.sparsity_type)
        if fixed is not None:
            return dataclasses.replace(self, sparsities=(1.0 - fixed,))
        return with_option_presets(self, "edge_popup", config.dataset)

    def unrecorded(self) -> tuple[str, ...]:
        """The fields left out of the signature and config.json: the sparsity type when unstructured (runs of
        it keep the signatures they had before sparsity types existed)."""
        return ("sparsity_type",) if self.sparsity_type == patterns.UNSTRUCTURED else ()


def layer_targets(model, weights, sparsity: float, options: EdgePopupOptions) -> tuple:
    """((layer path, fraction removed), ...) of one level: the distribution's targets, dense layers at 0."""
    dense = {model.encoding_layer} if options.dense_encoding else set()
    dense |= {model.classifier_layer} if options.dense_classifier else set()
    shapes = {name: k.shape for name, k in named_kernels(weights).items()}
    return tuple(distributions.layer_targets(options.distribution, shapes, sparsity, tuple(dense)).items())


def edge_popup_rule(model, weights, sparsity: float, options: EdgePopupOptions) -> EdgePopup:
    """The level's training rule: the distribution's per-layer targets, the top-k in the options' pattern."""
    return EdgePopup(layer_targets(model, weights, sparsity, options), sparsity_type=options.sparsity_type)


def check_level_pattern(rule: EdgePopup, masks) -> None:
    """A structured level's masks keep their pattern (layers at sparsity 0 dense); unstructured: nothing."""
    if rule.sparsity_type != patterns.UNSTRUCTURED:
        patterns.check_pattern(masks, rule.sparsity_type, dense={n for n, s in rule.sparsities if s == 0.0})


class EdgePopupLevel(Plan):
    """One sparsity level: one segment training the scores of frozen random weights."""

    name, label = NAME, LABEL
    rule: EdgePopup | None = None

    def __init__(self, config: TrainConfig, options: EdgePopupOptions, sparsity: float):
        super().__init__(config, options)
        self.sparsity = sparsity
        self.initial_weights = None

    def signature_fields(self) -> dict:
        return {"sparsity": self.sparsity}

    def setup(self, run: Run):
        key_weights, key_scores = jax.random.split(jax.random.key(self.config.seed))
        variables = init_variables(run.model, key_weights, (1,) + run.dataset.image_shape)
        scores = init_scores(key_scores, kernels(variables.weights))
        self.rule = edge_popup_rule(run.model, variables.weights, self.sparsity, self.options)
        note = patterns.dense_note(self.options.sparsity_type,
                                   {n: k.shape for n, k in named_kernels(variables.weights).items()})
        if note:
            log(note)
        self.initial_weights = jax.tree.map(np.array, variables.weights)  # host copy: the step donates its input
        return run.new_state(variables, scores, self.rule)

    def segment_label(self, segment):
        return {"sparsity_target": self.sparsity}

    def entry(self, run: Run, state, segment):
        unchanged = all(np.array_equal(np.asarray(a), np.asarray(b))
                        for a, b in zip(jax.tree.leaves(state.weights), jax.tree.leaves(self.initial_weights)))
        if not unchanged:  # edge-popup must never train the weights; fail loudly if it did
            raise AssertionError("edge-popup changed the frozen weights")
        masks = masks_in_use(self.rule, state.masks, state.scores)
        check_level_pattern(self.rule, masks)  # the ticket keeps the pattern
        return {"sparsity_target": self.sparsity, "sparsity": sparsity_of(masks),
                "layer_sparsity": layer_sparsity_of(masks), "weights_unchanged": unchanged,
                "epochs": self.config.epochs}

    def figures(self, run: Run, results):
        plots.training_curves(run.metrics(), os.path.join(run.workdir, "training_curves.png"),
                              title=f"edge-popup, sparsity {self.sparsity:.2f}")


class RandomFloor(EdgePopupLevel):
    """The level's random-mask control: the search's frozen weights under a uniformly random mask with
    the level's per-layer kept counts (edge-popup's top-k of i.i.d. random scores), BN running
    statistics recalibrated on the training set; nothing is trained, and no ticket is written."""

    label = f"{LABEL}, random-mask floor"
    rule = MaskedTraining(trainable=())  # the fixed random mask: nothing trained

    def setup(self, run: Run):
        key_weights, _ = jax.random.split(jax.random.key(self.config.seed))
        variables = init_variables(run.model, key_weights, (1,) + run.dataset.image_shape)
        search = edge_popup_rule(run.model, variables.weights, self.sparsity, self.options)
        key = jax.random.fold_in(jax.random.key(self.config.seed + RESEED), int(round(self.sparsity * 1e6)))
        masks = masks_in_use(search, None, init_scores(key, kernels(variables.weights)))
        check_level_pattern(search, masks)
        return run.new_state(variables._replace(masks=masks), {}, self.rule)

    def train(self, run: Run, state, start, partial_epoch):
        stats = recalibrate_batch_stats(run.trainer, state, self.rule, seed=self.config.seed)
        return put_replicated(run.trainer.mesh, state.replace(batch_stats=stats))

    def entry(self, run: Run, state, segment):
        masks = jax.tree.map(np.asarray, state.masks)
        return {"sparsity_target": self.sparsity, "sparsity": sparsity_of(masks),
                "layer_sparsity": layer_sparsity_of(masks), "control": "random", "epochs": 0}

    def ticket_path(self, run: Run, segment):
        return None

    def results_fields(self):
        return {"control": "random"}

    def figures(self, run: Run, results):
        pass


def run_level(config: TrainConfig, workdir: str, sparsity: float, options: EdgePopupOptions,
              trainer: Trainer | None = None, *, outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """Searches one sparsity level (or, with ``options.control``, takes its random floor) in WORKDIR/sparsity_S;
    returns its results entry."""
    plan = (RandomFloor if options.control == "random" else EdgePopupLevel)(config, options, sparsity)
    return Run(plan, config, level_dir(workdir, sparsity), trainer=trainer, outputs=outputs,
               hooks=hooks).execute()["runs"][0]


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


class EdgePopupSweep(Plan):
    """The whole sweep: one part per level (``EdgePopupLevel``, or ``RandomFloor`` with ``options.control``),
    each a run of its own in WORKDIR/sparsity_S, then the dense baseline. WORKDIR is held (config.json: the
    sweep's signature, without the levels, and record) while a level has still to run."""

    name = NAME

    def __init__(self, config: TrainConfig, options: EdgePopupOptions):
        options = options.resolve(config)
        super().__init__(config, options)
        self.label = sweep_label(config, options)
        self.baseline: dict | None = None  # the dense baseline's entry, once ``after_parts`` has it

    def parts(self) -> list[tuple[str, Plan]]:
        level = RandomFloor if self.options.control == "random" else EdgePopupLevel
        return [(level_name(s), level(self.config, self.options, s)) for s in self.options.sparsities]

    def after_parts(self, run: Run) -> None:
        self.baseline = dense_baseline(self.config, run.workdir, self.options.dense_baseline, outputs=run.outputs,
                                       hooks=run.hooks)

    def results_fields(self) -> dict:
        options = self.options
        fields = {"dataset": self.config.dataset, "model": self.config.model, "dense_baseline": self.baseline,
                  "control": options.control, "distribution": options.distribution}
        if options.sparsity_type != patterns.UNSTRUCTURED:  # results of the default type keep their keys
            fields["sparsity_type"] = options.sparsity_type
        return fields

    def figures(self, run: Run, results: dict) -> None:
        runs, config = results["runs"], self.config
        title = f"edge-popup on {config.dataset}, T = {config.timesteps}"
        plots.accuracy_vs_sparsity({self.label: [[(r["sparsity"], r["test_accuracy"]) for r in runs]]},
                                   os.path.join(run.workdir, "accuracy_vs_sparsity.png"),
                                   dense_accuracy=self.baseline["test_accuracy"] if self.baseline else None,
                                   title=title)
        entries_figure({f"{LABEL} ({config.model})": [runs]}, os.path.join(run.workdir, "accuracy_vs_energy.png"),
                       title=title)


def run(config: TrainConfig, options: EdgePopupOptions, workdir: str, *, trainer: Trainer | None = None,
        outputs: Outputs = Outputs(), hooks: RunHooks = RunHooks()) -> dict:
    """The whole sweep (``EdgePopupSweep``) run by ``Run``; returns (and writes) WORKDIR/results.json."""
    results = Run(EdgePopupSweep(config, options), config, workdir, trainer=trainer, outputs=outputs,
                  hooks=hooks).execute()
    for r in results["runs"]:
        log(f"sparsity {r['sparsity']:.4f}: test accuracy {r['test_accuracy']:.4f}")
    if results["dense_baseline"]:
        log(f"dense baseline: test accuracy {results['dense_baseline']['test_accuracy']:.4f}")
    return results
