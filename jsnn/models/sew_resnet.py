"""SEW-ResNet (Fang et al., NeurIPS 2021): spike-element-wise residual blocks with the ADD connect
function, on the ImageNet stem; the ImageNet pruning testbed (SEW-ResNet-18/34 at T = 4).

As in the SEW authors' code (fangwei123456/Spike-Element-Wise-ResNet, spikingjelly's sew_resnet.py)
and Shi et al.'s copy of it (xyshi2000/Unstructured-Pruning models/sew_resnet.py, 5892f35):

* stem: conv 7x7 stride 2 (padding 3) -> BN -> spiking neuron -> max pool 3x3 stride 2 (padding 1);
* a basic block: ``SN(BN(conv3x3(SN(BN(conv3x3(x))))))`` ADD ``identity``, where ``identity`` is
  ``x``, or ``SN(BN(conv1x1 stride s(x)))`` where the block changes the shape (its "downsample"
  carries its own neuron). The join is the sum of two spike maps: the next block reads spike
  counts 0, 1, 2, ... (no neuron after the join), which is the point of SEW (identity mapping);
* four stages of 64, 128, 256, 512 channels (stride 2 at the first block of stages 2-4), [2, 2, 2, 2]
  blocks (SEW-ResNet-18) or [3, 4, 6, 3] (-34); global average pool -> linear classifier, logits per
  timestep.

The neuron is jsnn's LIF (``lif``); SEW's ImageNet runs use IF neurons (decay 1), which the recipe
sets. SEW's other connect functions (AND, IAND) are not implemented. Neurons whose spikes enter a
join (conv2's, the downsample's, the stem's) cannot be gated by energy pruning (``jsnn.sparsity.gated_synops``
reads the ``add`` layer as a residual join).
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsnn.layers import BNConfig, ConvBN
from jsnn.models.common import SpikingModel, encode, max_pool, spike_with_stats
from jsnn.models.description import Describer, Layer
from jsnn.neuron import LIFConfig

SEW_RESNET18_BLOCKS = (2, 2, 2, 2)
SEW_RESNET34_BLOCKS = (3, 4, 6, 3)
STEM_POOL = (3, 2, 1)  # window, stride, padding: torchvision's / SEW's ImageNet stem


def _changes_shape(stride: int, in_channels: int, features: int) -> bool:
    return stride != 1 or in_channels != features


class SEWBasicBlock(nn.Module):
    """SN(BN(conv3x3)) -> SN(BN(conv3x3)), ADD the identity (or the downsample's spikes)."""

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
        out = spike_with_stats(self, conv2(h, train, defer_bn=True), T, self.lif, conv2)
        if _changes_shape(self.stride, x.shape[-1], self.features):
            downsample = conv_bn("downsample", self.stride, kernel_size=1)
            identity = spike_with_stats(self, downsample(x, train, defer_bn=True), T, self.lif, downsample)
        else:
            identity = x
        return out + identity  # ADD: spike counts, no neuron after the join


def describe_sew_block(d: Describer, block: str, source: str, features: int, stride: int) -> str:
    """The layers of one ``SEWBasicBlock`` named ``block`` reading ``source``; returns its join."""
    conv1 = d.lif(f"{block}/conv1_lif", d.conv(f"{block}/conv1", source, features, stride=stride))
    conv2 = d.lif(f"{block}/conv2_lif", d.conv(f"{block}/conv2", conv1, features))
    identity = source
    if _changes_shape(stride, d.shape(source)[-1], features):
        identity = d.lif(f"{block}/downsample_lif",
                         d.conv(f"{block}/downsample", source, features, kernel_size=1, stride=stride))
    return d.add(f"{block}/add", conv2, identity)


class SEWResNet(SpikingModel):
    """The ImageNet SEW-ResNet (module doc): stem, ``stage_blocks`` basic blocks per stage of
    ``stage_features`` channels, global average pool, linear classifier."""

    stem_features: int = 64
    stage_features: Sequence[int] = (64, 128, 256, 512)
    stage_blocks: Sequence[int] = SEW_RESNET18_BLOCKS
    timesteps: int = 4  # SEW's ImageNet setting
    encoding_layer: ClassVar[str] = "stem"
    classifier_layer: ClassVar[str] = "fc"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        self.check()
        T = self.timesteps
        stem = self.conv_bn(self.channels(self.stem_features), "stem", kernel_size=7, stride=2,
                            input_is_spikes=False)
        x = max_pool(spike_with_stats(self, encode(stem, images, T, train), T, self.lif, stem), *STEM_POOL)
        for s, (features, blocks) in enumerate(zip(self.stage_features, self.stage_blocks)):
            for b in range(blocks):
                x = SEWBasicBlock(self.channels(features), 2 if b == 0 and s > 0 else 1, T, self.lif, self.bn,
                                  self.weight_init, self.precision, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return self.logits_per_timestep(self.dense(self.num_classes, name=self.classifier_layer)(x))

    @nn.nowrap
    def layers(self, image_shape) -> list[Layer]:
        """What ``__call__`` computes on images of ``image_shape`` (H, W, C), or event frames (T, H, W, C),
        as data (``description.py``)."""
        d = Describer(image_shape, self.timesteps)
        stem = d.conv("stem", "input", self.channels(self.stem_features), kernel_size=7, stride=2)
        window, stride, padding = STEM_POOL
        x = d.max_pool("maxpool", d.lif("stem_lif", stem), window, stride, padding)
        for s, (features, blocks) in enumerate(zip(self.stage_features, self.stage_blocks)):
            for b in range(blocks):
                x = describe_sew_block(d, f"stage{s}_block{b}", x, self.channels(features),
                                       2 if b == 0 and s > 0 else 1)
        d.linear(self.classifier_layer, d.flatten("flatten", d.avg_pool("avgpool", x)), self.num_classes)
        return d.layers
