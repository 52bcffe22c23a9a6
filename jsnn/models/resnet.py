"""Res-SNN-19 as in Kim et al.'s code: a stem and stages of [3, 3, 2] basic blocks (128, 256, 512 channels)."""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsnn.layers import BNConfig, ConvBN
from jsnn.models.common import SpikingModel, encode, spike_with_stats
from jsnn.models.description import Describer, Layer
from jsnn.neuron import LIFConfig


class SpikingBasicBlock(nn.Module):
    """LIF(BN(conv3x3)) -> BN(conv3x3) + shortcut -> LIF; the shortcut is
    BN(conv1x1) when the shape changes, identity otherwise."""

    features: int
    stride: int
    timesteps: int
    lif: LIFConfig
    bn: BNConfig
    weight_init: str
    precision: str = "f32"

    @nn.compact
    def __call__(self, x, train: bool):
        T = self.timesteps

        def conv_bn(name, stride=1, kernel_size=3):
            return ConvBN(self.features, kernel_size, stride, self.weight_init, self.bn, precision=self.precision,
                          name=name)

        conv1, conv2 = conv_bn("conv1", self.stride), conv_bn("conv2")
        h = spike_with_stats(self, conv1(x, train, defer_bn=True), T, self.lif, conv1)
        out = conv2(h, train)
        feeding = [conv2]
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = conv_bn("shortcut", self.stride, kernel_size=1)
            out = out + shortcut(x, train)
            feeding.append(shortcut)
        else:
            out = out + x
        return spike_with_stats(self, out, T, self.lif, *feeding)


def describe_block(d: Describer, block: str, source: str, features: int, stride: int) -> str:
    """The layers of one ``SpikingBasicBlock`` named ``block`` reading ``source``; returns its output."""
    conv1 = d.conv(f"{block}/conv1", source, features, stride=stride)
    conv2 = d.conv(f"{block}/conv2", d.lif(f"{block}/conv1_lif", conv1), features)
    if stride != 1 or d.shape(source)[-1] != features:
        skip = d.conv(f"{block}/shortcut", source, features, kernel_size=1, stride=stride)
    else:
        skip = source
    return d.lif(f"{block}/lif", conv2, skip)  # the residual join: the LIF receives the sum


class SpikingResNet(SpikingModel):
    """stem conv3x3 -> BN -> LIF; stages of basic blocks (stride 2 at each
    stage's first block); global average pool -> linear -> LIF -> linear."""

    stem_features: int = 64
    stage_features: Sequence[int] = (128, 256, 512)
    stage_blocks: Sequence[int] = (3, 3, 2)
    hidden_features: int = 256
    encoding_layer: ClassVar[str] = "stem"
    classifier_layer: ClassVar[str] = "fc2"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        self.check()
        T = self.timesteps
        stem = self.conv_bn(self.channels(self.stem_features), "stem", input_is_spikes=False)
        x = spike_with_stats(self, encode(stem, images, T, train), T, self.lif, stem)
        for s, (features, blocks) in enumerate(zip(self.stage_features, self.stage_blocks)):
            for b in range(blocks):
                x = SpikingBasicBlock(self.channels(features), 2 if b == 0 else 1, T, self.lif, self.bn,
                                      self.weight_init, self.precision, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        fc1 = self.dense(self.channels(self.hidden_features), name="fc1")
        x = spike_with_stats(self, fc1(x), T, self.lif, fc1)
        return self.logits_per_timestep(self.dense(self.num_classes, name="fc2")(x))

    @nn.nowrap
    def layers(self, image_shape) -> list[Layer]:
        """What ``__call__`` computes on images of ``image_shape`` (H, W, C), or event frames (T, H, W, C),
        as data (``description.py``)."""
        d = Describer(image_shape, self.timesteps)
        x = d.lif("stem_lif", d.conv("stem", "input", self.channels(self.stem_features)))
        for s, (features, blocks) in enumerate(zip(self.stage_features, self.stage_blocks)):
            for b in range(blocks):
                x = describe_block(d, f"stage{s}_block{b}", x, self.channels(features), 2 if b == 0 else 1)
        fc1 = d.linear("fc1", d.flatten("flatten", d.avg_pool("avgpool", x)), self.channels(self.hidden_features))
        d.linear(self.classifier_layer, d.lif("fc1_lif", fc1), self.num_classes)
        return d.layers
