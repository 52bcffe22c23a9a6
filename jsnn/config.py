"""Run configuration: every setting and every default written once, with where it comes from.

``TrainConfig`` is the one source of truth. Its fields carry what a program needs to make a
flag of each (help text, a short name, the registry its choices come from, the help group:
``train/flags.py`` generates the flags from them); the neuron's settings are nested in it
(``TrainConfig.lif``, a ``LIFSettings`` whose defaults are ``jsnn.neuron.LIFConfig``'s).

A field left ``None`` takes the preset for the method and dataset below (``PRESETS``: the
paper's CIFAR settings, or a small digits budget that runs in minutes on 2 CPU cores);
``METHOD_PRESETS`` holds the presets of the methods' own options (IMP's rewind epoch,
edge-popup's sparsity levels).

Files keep the flat layout they have always had (``to_dict``, and the run signature made from it in
jsnn/runs/workdir.py: the neuron's settings beside the others, under today's names); ``from_dict``
and the constructor accept both that and the nested layout, so old tickets and workdirs load and
resume unchanged.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jsnn import data as jdata
from jsnn.neuron import LIFConfig
from jsnn.precision import PRECISIONS
from jsnn.surrogate import Surrogate

# The paper's CIFAR settings (Yao et al. Sec. 5-6, following Kim et al. 2022 and edge-popup):
# SGD momentum 0.9, weight decay 5e-4, cosine schedule, batch 128, T = 5.
PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 5e-4
PAPER_BATCH_SIZE = 128
PAPER_TIMESTEPS = 5

# Event-camera data (jsnn.data.EVENT_DATASETS): T is the frame count of the dataset's default frames
# (jsnn/data/events/loader.py DEFAULT_FRAMES, which cites the note's preprocessing table), so one frame
# feeds each step. The networks: digits_dvs (2 x 8 x 8 frames, digits' shape) digits' "digits_cnn" (edge-
# popup's preset: 92.5 % test accuracy with it, 78 % with the small "dvs_small", one run each on this 2-core
# machine); N-MNIST (2 x 34 x 34) the small three-stage "dvs_small"; DVS Gesture (64 x 64,
# T = 16: SpikingResformer's dvs128gesture.yaml) and CIFAR10-DVS (48 x 48, T = 10: SpikingJelly memopt,
# Shi et al. ICLR 2024) a VGG-11, the family the issue names (the papers' own networks, SpikingResformer /
# VGGSNN, are not in jsnn). Optimisation: jsnn's CIFAR recipe (Kim et al.: SGD, lr 0.1, cosine, 300 epochs;
# edge-popup lr 0.3, BN non-affine) at batch 64 for DVS Gesture (1 176 training recordings: 18 steps an
# epoch); the event papers' own recipes (Adam, TET loss) are not jsnn's. digits_dvs: the digits budgets
# (it has digits' 1 437 / 360 split).
_T = {name: jdata.default_frame_settings(name).timesteps for name in jdata.EVENT_DATASETS}


def _event_presets(lr: float, bn_affine: bool, epochs_digits: int) -> dict[str, dict[str, Any]]:
    return {
        "digits_dvs": dict(model="digits_cnn", epochs=epochs_digits, lr=lr, batch_size=64,
                           timesteps=_T["digits_dvs"], bn_affine=bn_affine),
        "nmnist": dict(model="dvs_small", epochs=300, lr=lr, batch_size=PAPER_BATCH_SIZE, timesteps=_T["nmnist"],
                       bn_affine=bn_affine),
        "dvs_gesture": dict(model="vgg11", epochs=300, lr=lr, batch_size=64, timesteps=_T["dvs_gesture"],
                            bn_affine=bn_affine),
        "cifar10_dvs": dict(model="vgg11", epochs=300, lr=lr, batch_size=PAPER_BATCH_SIZE,
                            timesteps=_T["cifar10_dvs"], bn_affine=bn_affine),
    }


# MNIST / Fashion-MNIST (28 x 28 x 1): "dvs_small", 16C3-P2-32C3-P2-64C3-P2-FC10 (29 k weights: the size of
# the small CNNs the SNN papers report MNIST with, e.g. STBP's 15C5-P2-40C5-P2-300 or Diehl et al.'s
# 12C5-P2-64C5-P2), T = 4, batch 128, SGD + cosine at jsnn's rates (lr 0.1; edge-popup 0.3, BN
# non-affine). Epochs: a few, as MNIST needs (docs/data.md has what they reach); Fashion-MNIST twice as many.


def _mnist_presets(lr: float, bn_affine: bool, epochs: int) -> dict[str, dict[str, Any]]:
    row = dict(model="dvs_small", lr=lr, batch_size=PAPER_BATCH_SIZE, timesteps=4, bn_affine=bn_affine)
    return {"mnist": dict(row, epochs=epochs), "fashion_mnist": dict(row, epochs=2 * epochs)}


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # method -> dataset family -> TrainConfig defaults
    "dense": {
        # Kim et al.: lr 0.1, 300 epochs per round for CIFAR
        "cifar": dict(model="resnet19", epochs=300, lr=0.1, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=True),
        # digits: the small net, T = 4, a budget of about a minute on 2 CPU cores
        "digits": dict(model="digits_cnn", epochs=15, lr=0.1, batch_size=64, timesteps=4, bn_affine=True),
        **_event_presets(lr=0.1, bn_affine=True, epochs_digits=15),
        **_mnist_presets(lr=0.1, bn_affine=True, epochs=8),
    },
    "imp": {
        # Kim et al.: ResNet-19 (the paper's SF experiments), lr 0.1, 300 epochs per round
        "cifar": dict(model="resnet19", epochs=300, lr=0.1, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=True),
        # digits: 8 epochs per round (the dense net passes 98% by epoch 4)
        "digits": dict(model="digits_cnn", epochs=8, lr=0.1, batch_size=64, timesteps=4, bn_affine=True),
        **_event_presets(lr=0.1, bn_affine=True, epochs_digits=8),
        **_mnist_presets(lr=0.1, bn_affine=True, epochs=4),
    },
    "edge_popup": {
        # paper Sec. 5: lr 0.3, batch 128, T = 5, 300 epochs
        # BN non-affine (edge-popup's default): nothing but the scores is learned
        "cifar": dict(model="vgg16", epochs=300, lr=0.3, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=False),
        "digits": dict(model="digits_cnn", epochs=20, lr=0.3, batch_size=64, timesteps=4, bn_affine=False),
        **_event_presets(lr=0.3, bn_affine=False, epochs_digits=20),
        **_mnist_presets(lr=0.3, bn_affine=False, epochs=8),
    },
    "sparse_training": {
        # SET / RigL from scratch (jsnn/runs/sparse_training.py) at the dense network's budget (RigL's "1x":
        # as many steps as dense training): on CIFAR the dense preset above (ResNet-19, lr 0.1, 300 epochs)
        "cifar": dict(model="resnet19", epochs=300, lr=0.1, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=True),
        "digits": dict(model="digits_cnn", epochs=15, lr=0.1, batch_size=64, timesteps=4, bn_affine=True),
        **_event_presets(lr=0.1, bn_affine=True, epochs_digits=15),
        **_mnist_presets(lr=0.1, bn_affine=True, epochs=8),
    },
    "shi": {
        # Shi et al.'s mask learning (jsnn/runs/shi.py): Adam on the weights (their optimizer). CIFAR: their
        # CIFAR-10 defaults (xyshi2000/Unstructured-Pruning main.py): Cifar10Net, T = 8, batch 16, Adam 1e-4, 800
        # search epochs (set --schedule constant --weight-decay 0 for theirs: configs/shi_cifar10_cifar10net.py).
        # digits: the sparse-training budget (15 epochs of search), Adam at 1e-3
        "cifar": dict(model="cifar10net", epochs=800, lr=1e-4, batch_size=16, timesteps=8, bn_affine=True),
        "digits": dict(model="digits_cnn", epochs=15, lr=1e-3, batch_size=64, timesteps=4, bn_affine=True),
        **_event_presets(lr=1e-3, bn_affine=True, epochs_digits=15),
        **_mnist_presets(lr=1e-3, bn_affine=True, epochs=8),
    },
}

_AS_CIFAR = ("nmnist", "dvs_gesture", "cifar10_dvs")


def _with_event_datasets(by_family: dict) -> dict:
    """A method option's presets by family, extended to the event datasets: digits_dvs takes digits', the
    recorded ones CIFAR's."""
    return {**by_family, "digits_dvs": by_family["digits"], **dict.fromkeys(_AS_CIFAR, by_family["cifar"])}


# IMP (Kim et al.): late rewinding to epoch 20 of round 0 on CIFAR; digits: a short budget.
# MNIST: rewinding to initialisation (0), what IMP took for a dataset without a preset of its own.
IMP_REWIND_EPOCH = {**_with_event_datasets({"cifar": 20, "digits": 2}), "mnist": 0, "fashion_mnist": 0}
# edge-popup: the paper sweeps five levels of the fraction REMOVED per layer on CIFAR; digits one.
EDGE_POPUP_SPARSITIES = _with_event_datasets({"cifar": (0.1, 0.3, 0.5, 0.7, 0.9), "digits": (0.5,)})
# SET / RigL: steps between mask updates. rigl-TF's flag default 100 (ImageNet, CIFAR-10); digits has 22
# steps an epoch and 330 in its 15 epochs, so 10 (25 updates before the end step at 75%). MNIST (468 steps an
# epoch): rigl-TF's 100.
SPARSE_TRAINING_UPDATE_EVERY = {**_with_event_datasets({"cifar": 100, "digits": 10}), "mnist": 100,
                                "fashion_mnist": 100}
# The method's own presets by dataset family (jsnn/runs/energy.py says where each comes from): Shi et al.'s
# CIFAR-10 mask learning rate, a quarter of 300 epochs of finetuning; digits: its 330 search steps, 5 epochs.
# The event datasets take digits' (no entry of their own).
ENERGY_PRESETS = {"cifar": {"mask_lr": 1e-4, "finetune_epochs": 75}, "digits": {"mask_lr": 0.01, "finetune_epochs": 5}}
# Shi et al.'s method (jsnn/runs/shi.py): lambda and the masks' Adam learning rate; their CIFAR-10 defaults
# (lambda 1e-11, masks at the weights' 1e-4, 200 finetune epochs after 800) and digits' (chosen on digits:
# benchmarks/results/shi_digits.json says what they reach). The event datasets take digits'.
SHI_PRESETS = {"cifar": {"penalty_lambda": 1e-11, "mask_lr": 1e-4, "finetune_epochs": 200},
               "digits": {"penalty_lambda": 1e-6, "mask_lr": 1e-2, "finetune_epochs": 5}}
# THE table of the methods' own option presets: method -> dataset family -> {option: value}, for the option
# fields a method leaves None (``option_presets``; each method's options dataclass fills them in ``resolve``)
METHOD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dense": {family: {} for family in PRESETS["dense"]},
    "imp": {family: {"rewind_epoch": epoch} for family, epoch in IMP_REWIND_EPOCH.items()},
    "edge_popup": {family: {"sparsities": levels} for family, levels in EDGE_POPUP_SPARSITIES.items()},
    "sparse_training": {family: {"update_every": n} for family, n in SPARSE_TRAINING_UPDATE_EVERY.items()},
    "energy": ENERGY_PRESETS,
    "shi": SHI_PRESETS,
}

SCHEDULES = ("cosine", "constant")  # the learning-rate schedules jsnn.trainer implements
RESETS = ("hard", "soft")  # jsnn.neuron's reset rules

# Settings that change how a run is driven and observed, never its results: they may differ
# between an interrupted run and its resumption. (data_dir: where the same dataset lives.)
RUN_CONTROL = frozenset({"data_dir", "checkpoint_every", "checkpoint_every_steps", "checkpoint_min_seconds",
                         "keep_checkpoints", "eval_every", "progress"})


def dataset_family(dataset: str) -> str:
    """The presets' key: "cifar" for CIFAR-10/100 and any streamed tfds:NAME (set --model and --batch-size
    for ImageNet-sized images); any other dataset (digits, each event dataset) its own."""
    return "cifar" if dataset in ("cifar10", "cifar100") or jdata.is_tfds_name(dataset) else dataset


def option_presets(method: str, dataset: str) -> dict[str, Any]:
    """The presets of ``method``'s own options on ``dataset`` (``METHOD_PRESETS``; a family without an entry of
    its own takes digits')."""
    table = METHOD_PRESETS.get(method, {})
    return dict(table.get(dataset_family(dataset), table.get("digits", {})))


def with_option_presets(options, method: str, dataset: str):
    """``options`` (a dataclass) with each field it leaves None that has a preset set to the preset."""
    preset = option_presets(method, dataset)
    return dataclasses.replace(options, **{k: v for k, v in preset.items() if getattr(options, k) is None})


def signature_differences(found: dict, wanted: dict, keys=None) -> list[str]:
    """'setting old -> new' for every setting where two run signatures differ."""
    keys = sorted(set(found) | set(wanted)) if keys is None else keys
    return [f"{k} {found.get(k, '(unset)')} -> {wanted.get(k, '(unset)')}" for k in keys
            if found.get(k) != wanted.get(k)]


def setting(default: Any, help: str | None = None, *, group: str | None = None, choices: str | tuple | None = None,
            short: str | None = None, flag: str | None = None, parse: Any = None, metavar: str | None = None) -> Any:
    """A configuration field (of TrainConfig, or of a method's options dataclass) and what its flag needs.

    ``choices``: a registry name (``train/flags.py`` looks it up when it builds the flags, so a newly
    registered model, surrogate, ... is a valid choice at once) or a tuple of the values allowed.
    ``flag``: the flag's spelling where it is not ``--name-with-dashes`` (e.g. ``--no-progress``).
    ``parse``: the flag's text to value where the field's type does not say it (``--sparsity-type``).
    """
    metadata = {"help": help, "group": group, "choices": choices, "short": short, "flag": flag, "parse": parse,
                "metavar": metavar}
    return dataclasses.field(default=default, metadata={k: v for k, v in metadata.items() if v is not None})


NEURON = "neuron"
DATA = "data and model"
OPTIMISATION = "optimisation (unset: the dataset's preset)"
RUN = "run"

_LIF = LIFConfig()


@dataclasses.dataclass(frozen=True)
class LIFSettings:
    """The neuron's settings in a run (V_th 1, beta 0.25, hard reset, atan; Kim et al.'s LIFNode, tau = 4/3).

    The JSON-friendly face of ``jsnn.neuron.LIFConfig`` (its defaults, the surrogate as a name and a
    width); ``neuron()`` gives the LIFConfig the model's layers run with.
    """

    surrogate: str = setting(_LIF.surrogate.name, group=NEURON, choices="surrogates")
    surrogate_width: float | None = setting(_LIF.surrogate.param, "alpha / width of the surrogate (family default)",
                                            group=NEURON)
    decay: float = setting(_LIF.decay, "beta, the membrane leak", group=NEURON)
    threshold: float = setting(_LIF.threshold, group=NEURON)
    reset: str = setting(_LIF.reset, group=NEURON, choices=RESETS)
    detach_reset: bool = setting(_LIF.detach_reset, group=NEURON, flag="--no-detach-reset")
    remat: bool = setting(_LIF.remat, "recompute the LIF scan in backward (saves memory)", group=NEURON)

    def neuron(self) -> LIFConfig:
        return LIFConfig(decay=self.decay, threshold=self.threshold, reset=self.reset,
                         detach_reset=self.detach_reset, surrogate=Surrogate(self.surrogate, self.surrogate_width),
                         remat=self.remat)


LIF_FIELDS = tuple(f.name for f in dataclasses.fields(LIFSettings))
FRAME_FIELDS = ("frames_by", "frame_size", "binarize")  # TrainConfig's event-frame settings


def _square(size) -> int | None:
    """A (height, width) frame size as the one number ``--frame-size`` takes (None when not square)."""
    return int(size[0]) if size[0] == size[1] else None


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``None`` fields are filled from ``PRESETS`` by ``resolve``.

    The neuron's settings live in ``lif``; ``TrainConfig(decay=0.5)``, ``config.decay`` and
    ``dataclasses.replace(config, decay=0.5)`` reach them under their flat names too.
    """

    dataset: str = setting("digits", "digits works offline (scikit-learn's bundled 8x8 digits)", group=DATA,
                           choices="datasets")
    data_dir: str | None = setting(None, "where MNIST or CIFAR lives (the IDX files, a tfds data dir, CIFAR's python "
                                   "archives), or the recorded event datasets (docs/events.md)", group=DATA)
    model: str | None = setting(None, group=DATA, choices="models")
    timesteps: int | None = setting(None, group=DATA, short="-T")
    batch_size: int | None = setting(None, "global batch, split over every local device", group=OPTIMISATION)
    epochs: int | None = setting(None, group=OPTIMISATION)
    lr: float | None = setting(None, group=OPTIMISATION)
    momentum: float = setting(PAPER_MOMENTUM, group=OPTIMISATION)
    weight_decay: float = setting(PAPER_WEIGHT_DECAY, group=OPTIMISATION)
    schedule: str = setting("cosine", "cosine (paper) or constant", group=OPTIMISATION, choices="schedules")
    seed: int = setting(0, group=OPTIMISATION)
    lif: LIFSettings = dataclasses.field(default_factory=LIFSettings)
    bn_affine: bool | None = setting(None, "learn BN's scale and offset (unset: the method's preset; edge-popup "
                                     "trains no BN, so nothing but the scores is learned)", group=NEURON)
    weight_init: str = setting("kaiming_normal", group=NEURON, choices="weight_inits")
    width: float = setting(1.0, "channel multiplier of the network (0.25: a quarter of the channels in every "
                           "layer; 1: the architecture as published)", group=DATA)
    precision: str = setting("f32", "operands of every convolution and matmul: f32, tf32 (TF32 on an NVIDIA GPU) or "
                             "bf16; parameters, optimizer, BN and the membrane potential stay f32 (docs/speed.md)",
                             group=DATA, choices=PRECISIONS)
    # event data (jsnn.data.FrameSettings; unset: the dataset's default frames, jsnn/data/events/loader.py)
    frames_by: str | None = setting(None, "event data: T frames of equal time windows or of equal event counts "
                                    "(unset: the dataset's default)", group=DATA, choices=("time", "count"))
    frame_size: int | None = setting(None, "event data: frames of SIZE x SIZE pixels, events summed into them "
                                     "(unset: the dataset's default)", group=DATA)
    binarize: bool | None = setting(None, "event data: a pixel is 1 where it had any event in the frame, else "
                                    "event counts (unset: the dataset's default)", group=DATA)
    # bookkeeping
    checkpoint_every: int = setting(1, "epochs", group=RUN)
    checkpoint_every_steps: int = setting(0, "also checkpoint every N steps inside an epoch, for long epochs "
                                          "(0: epoch ends only)", group=RUN)
    checkpoint_min_seconds: float = setting(30.0, "skip a periodic checkpoint (--checkpoint-every, "
                                            "--checkpoint-every-steps) when the last was written less than S "
                                            "seconds before; a segment's end and a stop signal always write (0: "
                                            "every one)", group=RUN)
    keep_checkpoints: int = setting(3, group=RUN)
    eval_every: int = setting(1, "epochs between test evaluations (the last epoch always)", group=RUN)
    progress: bool = setting(True, "no progress bars", group=RUN, flag="--no-progress")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A config from its flat (every file so far) or nested (``lif`` as a mapping) layout.

        Keys that are no setting (a workdir's ``signature``, method options, process counts in
        config.json) are left out.
        """
        known = {f.name for f in dataclasses.fields(cls)} | set(LIF_FIELDS)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """The flat layout (the neuron's settings beside the others, in field order), as files hold it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "lif":
                out.update(dataclasses.asdict(self.lif))
            elif f.name in FRAME_FIELDS:  # left out on images, so their files are what they were
                if getattr(self, f.name) is not None:
                    out[f.name] = getattr(self, f.name)
            elif f.name == "precision":  # left out at f32, so f32 runs' files are what they were
                if self.precision != "f32":
                    out[f.name] = self.precision
            else:
                out[f.name] = getattr(self, f.name)
        if self.dataset in jdata.EVENT_DATASETS and self.timesteps is not None:
            out["frames"] = self.frame_settings().to_json()  # every setting of the frames, for the signature
        return out

    def frame_settings(self) -> jdata.FrameSettings | None:
        """How an event dataset's events become the frames this run trains on (None for images): the
        dataset's default frames at T = ``timesteps``, with ``frames_by``, ``frame_size`` and ``binarize``
        where they are set."""
        if self.dataset not in jdata.EVENT_DATASETS:
            return None
        changes = {"slicing": self.frames_by, "binarise": self.binarize,
                   "size": None if self.frame_size is None else (self.frame_size, self.frame_size)}
        return dataclasses.replace(jdata.default_frame_settings(self.dataset, self.timesteps),
                                   **{k: v for k, v in changes.items() if v is not None})

    def resolve(self, preset: str) -> TrainConfig:
        """This config with its unset fields from ``PRESETS[preset]`` on its dataset. ``preset`` is a registered
        method's name, the method whose presets these are (``MethodEntry.preset``: the energy method takes
        sparse_training's), not necessarily the method that runs."""
        table = PRESETS[preset].get(dataset_family(self.dataset))
        if table is None:
            raise ValueError(f"no defaults for dataset {self.dataset!r}; choose one of "
                             f"{', '.join(jdata.DATASET_NAMES)}")
        filled = {k: v for k, v in table.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **filled)
        out.validate()
        if out.dataset in jdata.EVENT_DATASETS:  # the frames' settings, recorded (config.json, tickets)
            frames = out.frame_settings()
            out = dataclasses.replace(out, frames_by=frames.slicing, binarize=frames.binarise,
                                      frame_size=out.frame_size if frames.size is None else _square(frames.size))
        return out

    def validate(self) -> None:
        lif = self.lif
        checks = [
            (self.epochs is not None and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size is not None and self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.timesteps is not None and self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}"),
            (self.width > 0, f"width (channel multiplier) must be > 0, got {self.width}"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.lr is not None and self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.schedule in SCHEDULES, f"schedule must be cosine or constant, got {self.schedule!r}"),
            (0.0 <= self.momentum < 1.0, f"--momentum must lie in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0.0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (lif.threshold > 0.0, f"--threshold (V_th) must be > 0, got {lif.threshold}: a neuron with a "
                                  "threshold <= 0 spikes at every step and the network learns nothing"),
            (0.0 <= lif.decay <= 1.0, f"--decay (beta) must lie in [0, 1], got {lif.decay}"),
            (lif.surrogate_width is None or lif.surrogate_width > 0,
             f"--surrogate-width must be > 0, got {lif.surrogate_width}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}"),
            (self.checkpoint_every_steps >= 0,
             f"--checkpoint-every-steps must be >= 0 (0: epoch ends only), got {self.checkpoint_every_steps}"),
            (self.checkpoint_min_seconds >= 0,
             f"--checkpoint-min-seconds must be >= 0 (0: every periodic checkpoint), "
             f"got {self.checkpoint_min_seconds}"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}"),
        ]
        images = self.dataset not in jdata.EVENT_DATASETS
        given = [f"--{k.replace('_', '-')}" for k in FRAME_FIELDS if getattr(self, k) is not None]
        checks += [
            (not (images and given), f"{', '.join(given)} set how event data becomes frames; {self.dataset} is "
                                     f"images (event datasets: {', '.join(jdata.EVENT_DATASETS)})"),
            (self.frame_size is None or self.frame_size >= 1, f"--frame-size must be >= 1, got {self.frame_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _accept_flat_lif_settings(cls):
    """``cls(decay=...)`` and ``cls(lif={...})`` build the nested ``LIFSettings``; ``config.decay`` reads it."""
    dataclass_init = cls.__init__

    def __init__(self, *args, lif: LIFSettings | Mapping | None = None, **kwargs):
        flat = {k: kwargs.pop(k) for k in LIF_FIELDS if k in kwargs}
        if lif is None:
            lif = LIFSettings()
        elif isinstance(lif, Mapping):
            lif = LIFSettings(**lif)
        elif not isinstance(lif, LIFSettings):
            raise TypeError(f"lif must be LIFSettings or a mapping of its fields, got {type(lif).__name__}")
        dataclass_init(self, *args, lif=dataclasses.replace(lif, **flat) if flat else lif, **kwargs)

    __init__.__doc__ = dataclass_init.__doc__
    __init__.__wrapped__ = dataclass_init
    cls.__init__ = __init__

    def alias(name: str) -> property:
        def get(self):
            return getattr(self.lif, name)

        def put(self, value):
            self.lif = dataclasses.replace(self.lif, **{name: value})

        return property(get, put, doc=f"``lif.{name}``")

    for name in LIF_FIELDS:
        setattr(cls, name, alias(name))
    return cls


TrainConfig = _accept_flat_lif_settings(TrainConfig)
