"""Plain spiking VGG stacks: SNN-VGG-16 (13 3x3 convs, conv -> BN -> LIF), TET's VGGSNN, Shi et al.'s
CIFAR-10 network, and smaller ones built the same way."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax

from jsnn.layers import MaskedDense
from jsnn.models.common import SpikingModel, avg_pool, encode, spike_with_stats
from jsnn.models.description import Describer, Layer
from jsnn.pooling import max_pool_2x2

# SNN-VGG-16 (Simonyan & Zisserman config D; Kim et al.): M = 2x2 max pool
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# benchmarks' workload (a): a small SNN-VGG at CIFAR shape
VGG_SMALL_PLAN = (64, 128, "M", 256, "M", 256, "M")
# digits (8x8x1) default: trains in about a minute on 2 CPU cores
DIGITS_PLAN = (32, 64, "M", 128, "M")
# VGG-11 (Simonyan & Zisserman config A), the event-camera presets' network (jsnn/config.py)
VGG11_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# small event frames (N-MNIST: 2 x 34 x 34): pool early, three stages
DVS_SMALL_PLAN = (16, "M", 32, "M", 64, "M")
# VGGSNN (TET, Deng et al. ICLR 2022; CIFAR10-DVS / DVS Gesture at 48 x 48): A = 2x2 average pool.
# Gus-Lab/temporal_efficient_training models/VGG_models.py (f9bde41): Layer(2,64), Layer(64,128), AvgPool2d(2),
# 256, 256, pool, 512, 512, pool, 512, 512, pool, then Linear(512 * 3 * 3, 10) on the flattened map
VGGSNN_PLAN = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")
# Shi et al. ICLR 2024's CIFAR-10 network: xyshi2000/Unstructured-Pruning models/cifar10.py (5892f35),
# Cifar10Net(base_width=256): static_conv, conv1, conv2, MaxPool2d(2), conv3, conv4, conv5, MaxPool2d(2),
# all 3x3 convs of 256 channels + BN + LIF; then fc1 256*8*8 -> 128*4*4 (+ LIF, no bias) and fc2
CIFAR10NET_PLAN = (256, 256, 256, "M", 256, 256, 256, "M")
CIFAR10NET_HIDDEN = (2048,)


class SpikingVGG(SpikingModel):
    """conv3x3 -> BN -> LIF for each number in ``plan``, 2x2 max pool at each "M", 2x2 average pool
    at each "A", then flatten, a linear (no bias) -> LIF for each number in ``hidden``, and one
    linear classifier. The first conv is the encoding layer (on event frames: the conv that sees
    frame t at step t)."""

    plan: Sequence = VGG16_PLAN
    hidden: Sequence[int] = ()
    encoding_layer: ClassVar[str] = "conv0"
    classifier_layer: ClassVar[str] = "fc"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        self.check()
        T = self.timesteps
        x, n = None, 0
        for item in self.plan:
            if item == "M":
                x = max_pool_2x2(x)
                continue
            if item == "A":
                x = avg_pool(x, 2)
                continue
            layer = self.conv_bn(self.channels(item), name=f"conv{n}", input_is_spikes=x is not None)
            n += 1
            currents = encode(layer, images, T, train) if x is None else layer(x, train, defer_bn=True)
            x = spike_with_stats(self, currents, T, self.lif, layer)
        x = x.reshape((x.shape[0], -1))
        for i, features in enumerate(self.hidden):
            layer = MaskedDense(self.channels(features), use_bias=False, weight_init=self.weight_init,
                                precision=self.precision, name=f"fc{i}")
            x = spike_with_stats(self, layer(x), T, self.lif, layer)
        return self.logits_per_timestep(self.dense(self.num_classes, name="fc")(x))

    @nn.nowrap
    def layers(self, image_shape) -> list[Layer]:
        """What ``__call__`` computes on images of ``image_shape`` (H, W, C), or event frames (T, H, W, C),
        as data (``description.py``)."""
        d = Describer(image_shape, self.timesteps)
        x, n, p = "input", 0, 0
        for item in self.plan:
            if item in ("M", "A"):
                x = d.max_pool(f"pool{p}", x) if item == "M" else d.avg_pool(f"pool{p}", x, window=2)
                p += 1
                continue
            conv = d.conv(f"conv{n}", x, self.channels(item))
            x = d.lif(f"conv{n}_lif", conv)
            n += 1
        x = d.flatten("flatten", x)
        for i, features in enumerate(self.hidden):
            x = d.lif(f"fc{i}_lif", d.linear(f"fc{i}", x, self.channels(features), bias=False))
        d.linear(self.classifier_layer, x, self.num_classes)
        return d.layers
