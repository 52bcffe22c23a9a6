"""Run configuration: every default written once, with where it comes from.

Programs build a ``TrainConfig`` from flags; a flag left unset takes the
dataset's preset below (the paper's CIFAR settings, or a small digits budget
that runs in minutes on 2 CPU cores).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

# The paper's CIFAR settings (Yao et al. Sec. 5-6, following Kim et al. 2022 and edge-popup):
# SGD momentum 0.9, weight decay 5e-4, cosine schedule, batch 128, T = 5.
PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 5e-4
PAPER_BATCH_SIZE = 128
PAPER_TIMESTEPS = 5

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # method -> dataset -> defaults
    "dense": {
        # Kim et al.: lr 0.1, 300 epochs per round for CIFAR
        "cifar": dict(model="resnet19", epochs=300, lr=0.1, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=True),
        # digits: the small net, T = 4, a budget of about a minute on 2 CPU cores
        "digits": dict(model="digits_cnn", epochs=15, lr=0.1, batch_size=64, timesteps=4, bn_affine=True),
    },
    "imp": {
        # Kim et al.: ResNet-19 (the paper's SF experiments), lr 0.1, 300 epochs per round
        "cifar": dict(model="resnet19", epochs=300, lr=0.1, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=True),
        # digits: 8 epochs per round (the dense net passes 98% by epoch 4)
        "digits": dict(model="digits_cnn", epochs=8, lr=0.1, batch_size=64, timesteps=4, bn_affine=True),
    },
    "edge_popup": {
        # paper Sec. 5 / SPEC §3: lr 0.3, batch 128, T = 5, 300 epochs
        # BN non-affine (SPEC §3 default): nothing but the scores is learned
        "cifar": dict(model="vgg16", epochs=300, lr=0.3, batch_size=PAPER_BATCH_SIZE, timesteps=PAPER_TIMESTEPS,
                      bn_affine=False),
        "digits": dict(model="digits_cnn", epochs=20, lr=0.3, batch_size=64, timesteps=4, bn_affine=False),
    },
}


# Settings that change how a run is driven and observed, never its results: they may differ
# between an interrupted run and its resumption. (data_dir: where the same dataset lives.)
RUN_CONTROL = frozenset({"data_dir", "checkpoint_every", "checkpoint_every_steps", "keep_checkpoints",
                         "eval_every", "progress"})


def signature_differences(found: dict, wanted: dict, keys=None) -> list[str]:
    """'setting old -> new' for every setting where two run signatures differ."""
    keys = sorted(set(found) | set(wanted)) if keys is None else keys
    return [f"{k} {found.get(k, '(unset)')} -> {wanted.get(k, '(unset)')}" for k in keys
            if found.get(k) != wanted.get(k)]


def dataset_family(dataset: str) -> str:
    return "cifar" if dataset.startswith("cifar") else dataset


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``None`` fields are filled from ``PRESETS`` by ``resolve``."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str | None = None
    timesteps: int | None = None
    batch_size: int | None = None  # global batch, split over every device
    epochs: int | None = None
    lr: float | None = None
    momentum: float = PAPER_MOMENTUM
    weight_decay: float = PAPER_WEIGHT_DECAY
    schedule: str = "cosine"  # cosine (paper) | constant
    seed: int = 0
    # LIF neuron (SPEC §1 defaults; Kim et al.'s spikingjelly LIFNode, tau = 4/3)
    surrogate: str = "atan"
    surrogate_width: float | None = None  # None: the family's default (atan alpha = 2)
    decay: float = 0.25
    threshold: float = 1.0
    reset: str = "hard"
    detach_reset: bool = True
    remat: bool = False
    bn_affine: bool | None = None  # None: the method's preset (edge-popup trains no BN, SPEC §3)
    weight_init: str = "kaiming_normal"
    width: float = 1.0  # channel multiplier of the network (1: the architecture as published / as defined)
    # bookkeeping
    checkpoint_every: int = 1  # epochs between checkpoints
    checkpoint_every_steps: int = 0  # also every N steps inside an epoch (0: epoch ends only)
    keep_checkpoints: int = 3
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always)
    progress: bool = True

    def resolve(self, method: str) -> "TrainConfig":
        preset = PRESETS[method].get(dataset_family(self.dataset))
        if preset is None:
            raise ValueError(f"no defaults for dataset {self.dataset!r}; choose digits, cifar10 or cifar100")
        filled = {k: v for k, v in preset.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **filled)
        out.validate()
        return out

    def validate(self) -> None:
        checks = [
            (self.epochs is not None and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size is not None and self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.timesteps is not None and self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}"),
            (self.width > 0, f"width (channel multiplier) must be > 0, got {self.width}"),
            (self.lr is not None and self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.schedule in ("cosine", "constant"), f"schedule must be cosine or constant, got {self.schedule!r}"),
            (0.0 <= self.momentum < 1.0, f"--momentum must lie in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0.0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.threshold > 0.0, f"--threshold (V_th) must be > 0, got {self.threshold}: a neuron with a "
                                   "threshold <= 0 spikes at every step and the network learns nothing"),
            (0.0 <= self.decay <= 1.0, f"--decay (beta) must lie in [0, 1], got {self.decay}"),
            (self.surrogate_width is None or self.surrogate_width > 0,
             f"--surrogate-width must be > 0, got {self.surrogate_width}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}"),
            (self.checkpoint_every_steps >= 0,
             f"--checkpoint-every-steps must be >= 0 (0: epoch ends only), got {self.checkpoint_every_steps}"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def signature(self) -> dict:
        """Every resolved setting that can change the results (run-control settings left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_CONTROL}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
