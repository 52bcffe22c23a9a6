"""Architectures by name: ``get_model(name, num_classes, **options)``; ``build_model`` from a run's config.

Each model describes its layers as data (``model.layers(image_shape)``, ``description.py``), and
``observe`` (``observe.py``) shows what its layers compute while it runs."""
from __future__ import annotations

import functools

from jsnn.config import TrainConfig
from jsnn.layers import BNConfig
from jsnn.models.common import SpikingModel
from jsnn.models.description import Layer, describe
from jsnn.models.observe import observe
from jsnn.models.resnet import SpikingResNet
from jsnn.models.sew_resnet import SEW_RESNET18_BLOCKS, SEW_RESNET34_BLOCKS, SEWResNet
from jsnn.models.vgg import (
    CIFAR10NET_HIDDEN,
    CIFAR10NET_PLAN,
    DIGITS_PLAN,
    DVS_SMALL_PLAN,
    VGG11_PLAN,
    VGG16_PLAN,
    VGG_SMALL_PLAN,
    VGGSNN_PLAN,
    SpikingVGG,
)

MODELS = {
    "vgg16": functools.partial(SpikingVGG, plan=VGG16_PLAN),  # SNN-VGG-16 (13 convs, 5 pools, linear 512 -> classes)
    "resnet19": SpikingResNet,  # Res-SNN-19 (Kim et al.'s code)
    "vgg_small": functools.partial(SpikingVGG, plan=VGG_SMALL_PLAN),  # benchmarks' workload (a)
    "digits_cnn": functools.partial(SpikingVGG, plan=DIGITS_PLAN),  # offline digits default
    "vgg11": functools.partial(SpikingVGG, plan=VGG11_PLAN),  # DVS Gesture / CIFAR10-DVS presets (jsnn/config.py)
    "dvs_small": functools.partial(SpikingVGG, plan=DVS_SMALL_PLAN),  # N-MNIST presets
    # the field's pruning testbeds (configs/*.py, docs/reproduce.md)
    "sew_resnet18": functools.partial(SEWResNet, stage_blocks=SEW_RESNET18_BLOCKS),  # Fang et al. 2021, ImageNet
    "sew_resnet34": functools.partial(SEWResNet, stage_blocks=SEW_RESNET34_BLOCKS),
    "vggsnn": functools.partial(SpikingVGG, plan=VGGSNN_PLAN),  # TET (Deng et al. 2022), CIFAR10-DVS
    "cifar10net": functools.partial(SpikingVGG, plan=CIFAR10NET_PLAN, hidden=CIFAR10NET_HIDDEN),  # Shi et al. 2024
}


def get_model(name: str, num_classes: int, **options) -> SpikingModel:
    """Builds architecture ``name``; options: timesteps, lif, bn, weight_init, width, precision."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes, **options)


def build_model(config: TrainConfig, num_classes: int) -> SpikingModel:
    """The model a run's configuration describes (architecture, width, T, neuron, BN, initialiser)."""
    return get_model(config.model, num_classes, timesteps=config.timesteps, lif=config.lif.neuron(),
                     bn=BNConfig(affine=config.bn_affine), weight_init=config.weight_init,
                     width=config.width, precision=config.precision)


__all__ = ["MODELS", "build_model", "get_model", "SpikingModel", "SpikingVGG", "SpikingResNet", "SEWResNet", "Layer",
           "describe", "observe"]
