"""Architectures by name: ``get_model(name, num_classes, **options)``."""
from __future__ import annotations

import functools

from jsnn.models.common import SpikingModel
from jsnn.models.resnet import SpikingResNet
from jsnn.models.vgg import DIGITS_PLAN, VGG16_PLAN, VGG_SMALL_PLAN, SpikingVGG

MODELS = {
    "vgg16": functools.partial(SpikingVGG, plan=VGG16_PLAN),  # SNN-VGG-16, SPEC §2
    "resnet19": SpikingResNet,  # Res-SNN-19, SPEC §2
    "vgg_small": functools.partial(SpikingVGG, plan=VGG_SMALL_PLAN),  # benchmarks' workload (a)
    "digits_cnn": functools.partial(SpikingVGG, plan=DIGITS_PLAN),  # offline digits default
}


def get_model(name: str, num_classes: int, **options) -> SpikingModel:
    """Builds architecture ``name``; options: timesteps, lif, bn, weight_init."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes, **options)


__all__ = ["MODELS", "get_model", "SpikingModel", "SpikingVGG", "SpikingResNet"]
