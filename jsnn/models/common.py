"""Pieces shared by every SNN architecture: the spiking conv block, and the first layer's input:
direct encoding of a static image, or one event frame per timestep."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsnn.layers import STATS, Affine, BNConfig, ConvBN, MaskedDense, fold_time, lif_folded
from jsnn.models.description import check_frame_count
from jsnn.neuron import LIFConfig


def spike_with_stats(layer: nn.Module, currents: jax.Array | Affine, timesteps: int, lif: LIFConfig,
                     *feeding: nn.Module) -> jax.Array:
    """LIF over folded currents [T*B, ...] (``Affine``: a conv's output with its BatchNorm's map, which the LIF layer
    applies: ``ConvBN(..., defer_bn=True)``, for the one LIF it feeds); when statistics are being collected,
    the membrane potentials are recorded in the scope of every layer in ``feeding``
    (the layers whose outputs were summed into ``currents``). ``jsnn.models.observe``
    watches those ``record_potential`` calls to see each LIF layer run. The spikes of a LIF fed by one layer
    leave through that layer's ``gate_spikes`` (its per-neuron gate in ``Variables.gates``, if any)."""
    collect = layer.is_mutable_collection(STATS) and not layer.is_initializing()
    out = lif_folded(currents, timesteps, lif, return_potential=collect)
    spikes = out[0] if collect else out
    if collect:
        for f in feeding:
            f.record_potential(out[1])
    # a LIF fed by one layer may have its spikes gated per neuron (Shi et al.'s neuron masks, Variables.gates):
    # the neuron still integrates, its output is multiplied by the gate (without gates: unchanged)
    return feeding[0].gate_spikes(spikes) if len(feeding) == 1 else spikes


def max_pool(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
    """Max over window x window regions of NHWC ``x`` at ``stride``, ``padding`` on every side (padded values
    never win: -inf, as PyTorch's MaxPool2d pads); SEW-ResNet's stem pool is (3, 2, 1)."""
    return nn.max_pool(x, (window, window), (stride, stride), ((padding, padding), (padding, padding)))


def avg_pool(x: jax.Array, window: int) -> jax.Array:
    """Mean over window x window regions of NHWC ``x``, stride ``window``, edges that fit no window dropped
    (PyTorch's AvgPool2d(window), TET's VGGSNN)."""
    return nn.avg_pool(x, (window, window), (window, window))


def encode(layer: ConvBN, images: jax.Array, timesteps: int, train: bool) -> Affine | jax.Array:
    """The first conv + BN on the network's input, as currents folded [T*B, ...] (time-major); for event frames BN's
    map is left to the LIF layer they feed (``Affine``).

    Static images [B, H, W, C] (direct encoding): the conv sees the real-valued image once; its
    output is repeated over T. Event frames [B, T, H, W, C]: the conv sees frame t at step t (the
    frames moved time-major and folded into the batch, as every later layer sees its input), so
    its BN's statistics span T*B frames; T must be the model's."""
    if images.ndim == 5:
        check_frame_count(images.shape[1], timesteps)
        return layer(fold_time(jnp.swapaxes(images, 0, 1)), train, defer_bn=True)
    if images.ndim != 4:
        raise ValueError(f"images must be NHWC [B, H, W, C], or event frames [B, T, H, W, C], got shape {images.shape}")
    # BN on the B images, then repeated over T: XLA writes the T copies in the pass that applies BN's map
    x = layer(images, train)
    return fold_time(jnp.broadcast_to(x, (timesteps,) + x.shape))


class SpikingModel(nn.Module):
    """Base for the architectures: images [B, H, W, C] or event frames [B, T, H, W, C] -> logits [T, B, classes].

    Subclasses name their ``encoding_layer`` (the first conv, which sees the
    image or the event frames rather than spikes) and their ``classifier_layer`` (the last linear).
    """

    num_classes: int
    timesteps: int = 5  # T = 5: the paper's CIFAR setting
    lif: LIFConfig = LIFConfig()
    bn: BNConfig = BNConfig()
    weight_init: str = "kaiming_normal"
    width: float = 1.0  # channel multiplier: every conv / hidden layer has round(width * c) channels
    precision: str = "f32"  # of every convolution and matmul (jsnn/precision.py)

    def check(self):
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")

    def channels(self, features: int) -> int:
        """``features`` scaled by the width multiplier (at least 1)."""
        return max(1, int(round(features * self.width)))

    def conv_bn(self, features, name, stride=1, kernel_size=3, input_is_spikes=True):
        return ConvBN(features, kernel_size, stride, self.weight_init, self.bn, input_is_spikes,
                      precision=self.precision, name=name)

    def dense(self, features, name):
        return MaskedDense(features, use_bias=True, weight_init=self.weight_init, precision=self.precision, name=name)

    def logits_per_timestep(self, folded_logits: jax.Array) -> jax.Array:
        return folded_logits.reshape((self.timesteps, -1, folded_logits.shape[-1]))
