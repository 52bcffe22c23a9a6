"""Layers: masked conv / linear, BatchNorm over T×B, and the LIF layer.

Variables live in separate Flax collections, so training code can pass each
as its own pytree (see ``variables.py``):

  weights      conv / linear kernels (and linear biases)
  masks        one {0,1} array per kernel, same shape; the forward pass uses kernel * mask
  bn           BatchNorm scale and bias (absent when BN is non-affine)
  batch_stats  BatchNorm running mean and variance
  stats        firing statistics, written only when the collection is mutable
  gates        optional per-neuron gates on the spikes of the LIF a layer feeds (``gate_spikes``; Shi et al.'s
               neuron masks, jsnn/sparsity/connection_penalty.py): absent for every other method, and then nothing
               is gated

Stateless layers (conv, linear, BN, pooling) see time folded into the batch
axis, ``[T*B, ...]``; only the LIF layer unfolds to ``[T, B, ...]`` and scans.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jsnn import batch_split
from jsnn.conv import conv2d
from jsnn.neuron import LIFConfig, lif_time_major, use_kernel
from jsnn.precision import matmul

WEIGHTS, MASKS, BN, BATCH_STATS, STATS, GATES = "weights", "masks", "bn", "batch_stats", "stats", "gates"
GATE = "neurons"  # the leaf of a layer's gate: gates/<path>/neurons


def fold_time(x: jax.Array) -> jax.Array:
    """[T, B, ...] -> [T*B, ...] (time-major blocks: rows t*B .. t*B+B-1 are timestep t)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unfold_time(x: jax.Array, timesteps: int) -> jax.Array:
    """[T*B, ...] -> [T, B, ...]."""
    return x.reshape((timesteps, x.shape[0] // timesteps) + x.shape[1:])


# The initializers draw their random numbers flat and reshape them: the same numbers (threefry's
# bits follow an element's flat index), but XLA compiles a 1-D draw several times faster than a
# 4-D one, and every new kernel shape is a new compilation at the start of every program.


def kaiming_normal_fan_in(key, shape, dtype=jnp.float32):
    """N(0, 2/fan_in): PyTorch's kaiming_normal_(mode='fan_in', nonlinearity='relu'); the numbers of
    flax's ``variance_scaling(2.0, "fan_in", "normal")``, bit for bit."""
    variance = jnp.array(2.0 / math.prod(shape[:-1]), dtype=dtype)
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape) * jnp.sqrt(variance)


def signed_constant_fan_in(key, shape, dtype=jnp.float32):
    """sign(w) * sqrt(2/fan_in) (edge-popup's 'signed constant' weights)."""
    fan_in = 1
    for d in shape[:-1]:
        fan_in *= d
    sign = jnp.where(jax.random.bernoulli(key, 0.5, (math.prod(shape),)).reshape(shape), 1.0, -1.0)
    return (sign * jnp.sqrt(2.0 / fan_in)).astype(dtype)


WEIGHT_INITS: dict[str, Callable] = {
    "kaiming_normal": kaiming_normal_fan_in,
    "signed_constant": signed_constant_fan_in,
}


def filled(shape, value: float, dtype=jnp.float32) -> jax.Array:
    """A constant array made on the host and placed on the device: ``jnp.full`` would compile one
    program per shape, op by op, at the start of every run."""
    return jnp.asarray(np.full(shape, value, dtype))


def _masked_kernel(module: nn.Module, shape) -> jax.Array:
    if module.weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {module.weight_init!r}; choose one of {sorted(WEIGHT_INITS)}")
    init = WEIGHT_INITS[module.weight_init]
    kernel = module.variable(WEIGHTS, "kernel", lambda: init(module.make_rng("params"), shape)).value
    mask = module.variable(MASKS, "kernel", filled, shape, 1.0, kernel.dtype).value
    if module.is_initializing():  # init's outputs are dropped: creating the variables is all it needs
        return kernel
    if mask.shape == ():  # already applied to the kernel (variables.fold_masks): inference only
        return kernel
    if mask.shape != kernel.shape:
        raise ValueError(
            f"mask for {'/'.join(module.scope.path)} has shape {mask.shape}, kernel has {kernel.shape}"
        )
    return kernel * mask


def _collecting_stats(module: nn.Module) -> bool:
    return module.is_mutable_collection(STATS) and not module.is_initializing()


def _record_input_rate(module: nn.Module, x: jax.Array) -> None:
    """Per-input-channel spike count and the number of values it was summed over."""
    if module.input_is_spikes and _collecting_stats(module):
        module.put_variable(STATS, "input_sum", jnp.sum(x, axis=tuple(range(x.ndim - 1))))
        module.put_variable(STATS, "input_count", jnp.asarray(x.size // x.shape[-1], jnp.float32))


def _record_potential(module: nn.Module, potentials: jax.Array) -> None:
    """Per-output-channel sums of U and U^2 of the LIF layer this layer feeds."""
    if _collecting_stats(module):
        axes = tuple(range(potentials.ndim - 1))
        module.put_variable(STATS, "potential_sum", jnp.sum(potentials, axis=axes))
        module.put_variable(STATS, "potential_sq_sum", jnp.sum(jnp.square(potentials), axis=axes))
        module.put_variable(STATS, "potential_count", jnp.asarray(potentials.size // potentials.shape[-1], jnp.float32))


def _gate_spikes(module: nn.Module, spikes: jax.Array) -> jax.Array:
    """``spikes`` of the LIF ``module`` feeds (folded [T*B, ...]) times its gate ``gates/<path>/neurons`` (the
    shape of one example's output: a gate per neuron, shared over time and batch), or unchanged without one."""
    if not module.has_variable(GATES, GATE):
        return spikes
    return spikes * module.get_variable(GATES, GATE).astype(spikes.dtype)


def _batch_norm(module: nn.Module, x: jax.Array, train: bool, bn: "BNConfig") -> jax.Array:
    """BatchNorm over every axis but the last, with variables in ``module``'s own scope (``_bn_deferred``,
    applied)."""
    out = _bn_deferred(module, x, train, bn)
    return out.apply() if isinstance(out, Affine) else out


def _bn_deferred(module: nn.Module, x: jax.Array, train: bool, bn: "BNConfig"):
    """BatchNorm over every axis but the last, with variables in ``module``'s own scope, as ``Affine``: ``x`` and
    the per-channel map the statistics give (``x`` itself while initializing).

    On folded input [T*B, H, W, C] the statistics are over (T, B, H, W)
    jointly (what folding T into the batch gives; the default). PyTorch semantics, as in Kim et al.'s code:
    momentum 0.1, eps 1e-5, the running variance tracks the unbiased batch
    variance. Under jit with the batch sharded over devices the reductions
    span the global batch, so BN is synchronised across devices; run per device
    (``jsnn.batch_split``), the statistics are averaged over the devices.
    """
    c = x.shape[-1]
    running_mean = module.variable(BATCH_STATS, "mean", filled, (c,), 0.0)
    running_var = module.variable(BATCH_STATS, "var", filled, (c,), 1.0)
    if bn.affine:
        scale = module.variable(BN, "scale", filled, (c,), bn.scale_init).value
        bias = module.variable(BN, "bias", filled, (c,), 0.0).value
    if module.is_initializing():
        # init keeps the variables and drops the outputs; under lazy_init the arithmetic below would run op by
        # op on the concrete variables, each op one more program to compile at the start of every run
        return x
    if train:
        axes = tuple(range(x.ndim - 1))
        x32 = x.astype(jnp.float32)
        devices = batch_split.axis()  # on one device's part of the batch: the global batch's statistics
        mean = jnp.mean(x32, axes)
        mean = batch_split.device_mean(mean, devices) if devices else mean
        var = jnp.mean(jnp.square(x32 - mean), axes)
        var = batch_split.device_mean(var, devices) if devices else var
        if module.is_mutable_collection(BATCH_STATS):
            n = x.size // c * (jax.lax.psum(1, devices) if devices else 1)
            m = bn.momentum
            running_mean.value = (1 - m) * running_mean.value + m * mean
            running_var.value = (1 - m) * running_var.value + m * var * (n / max(n - 1, 1))
    else:
        mean, var = running_mean.value, running_var.value
    scale_x, shift = _bn_map(mean, var, scale if bn.affine else None, bias if bn.affine else None, bn, x.dtype)
    return Affine(x, scale_x, shift)


def _bn_map(mean, var, scale, bias, bn: "BNConfig", dtype) -> tuple[jax.Array, jax.Array]:
    """BatchNorm as a per-channel map x * a + b: (a, b) from the statistics and (if affine) scale and bias."""
    inv = jax.lax.rsqrt(var + bn.epsilon)
    if scale is not None:
        return (inv * scale).astype(dtype), (bias - mean * inv * scale).astype(dtype)
    return inv.astype(dtype), -(mean * inv).astype(dtype)


class Affine(NamedTuple):
    """A conv's output before its BatchNorm's per-channel map (``ConvBN(..., defer_bn=True)``): the LIF layer it
    feeds computes ``currents * scale + shift`` itself (``jsnn.neuron.lif_time_major``'s ``affine``), so where
    that layer runs as the C++ kernel BatchNorm's output is never written out."""

    currents: jax.Array
    scale: jax.Array
    shift: jax.Array

    def apply(self) -> jax.Array:
        # one pass over the activation: XLA's CPU backend contracts it into a fused multiply-add, as the kernel
        # computes it
        return self.currents * self.scale + self.shift


@dataclasses.dataclass(frozen=True)
class BNConfig:
    """BatchNorm settings. ``scale_init`` = alpha * V_th gives tdBN (Zheng et al. 2021)."""

    affine: bool = True  # edge-popup trains nothing but scores: it uses affine=False
    momentum: float = 0.1  # PyTorch default, Kim et al.
    epsilon: float = 1e-5  # PyTorch default
    scale_init: float = 1.0


class ConvBN(nn.Module):
    """Masked conv (NHWC / HWIO, no bias) followed by BatchNorm, sharing one variable path.

    Keeping the conv and its BN in one scope means weights/P/kernel,
    masks/P/kernel, bn/P/{scale,bias}, batch_stats/P/{mean,var} and
    stats/P/... all sit at the same path P, which is what the SF criterion
    looks up (it needs the BN that follows each kernel).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    weight_init: str = "kaiming_normal"
    bn: BNConfig = BNConfig()
    input_is_spikes: bool = True  # False for the encoding layer (it sees the image)
    precision: str = "f32"  # of the convolution (jsnn/precision.py); its result, BN and the LIF are f32

    @nn.compact
    def __call__(self, x, train: bool, defer_bn: bool = False):
        """The conv's output after BatchNorm; with ``defer_bn``, as ``Affine``: the conv's output and BatchNorm's
        per-channel map, for the one LIF layer it feeds to apply (``jsnn.models.common.spike_with_stats``).
        Code that intercepts this call to read its output asks for the array (``defer_bn=False``)."""
        if x.ndim != 4:
            raise ValueError(f"ConvBN expects NHWC input [N, H, W, C], got shape {x.shape}")
        _record_input_rate(self, x)
        k = self.kernel_size
        kernel = _masked_kernel(self, (k, k, x.shape[-1], self.features))
        pad = k // 2
        y = conv2d(x, kernel, self.stride, pad, precision=self.precision, input_is_spikes=self.input_is_spikes)
        out = _bn_deferred(self, y, train, self.bn)
        return out.apply() if isinstance(out, Affine) and not defer_bn else out

    def record_potential(self, potentials: jax.Array) -> None:
        _record_potential(self, potentials)

    def gate_spikes(self, spikes: jax.Array) -> jax.Array:
        return _gate_spikes(self, spikes)


class MaskedDense(nn.Module):
    """Linear layer [..., in] -> [..., features]; kernel * mask, optional bias (not masked)."""

    features: int
    use_bias: bool = True
    weight_init: str = "kaiming_normal"
    input_is_spikes: bool = True
    precision: str = "f32"  # of the matmul (jsnn/precision.py); its result and the bias are f32

    @nn.compact
    def __call__(self, x):
        _record_input_rate(self, x)
        kernel = _masked_kernel(self, (x.shape[-1], self.features))
        y = matmul(x, kernel, self.precision)
        if self.use_bias:
            y = y + self.variable(WEIGHTS, "bias", filled, (self.features,), 0.0).value.astype(y.dtype)
        return y

    def record_potential(self, potentials: jax.Array) -> None:
        _record_potential(self, potentials)

    def gate_spikes(self, spikes: jax.Array) -> jax.Array:
        return _gate_spikes(self, spikes)


def lif_folded(x: jax.Array | Affine, timesteps: int, config: LIFConfig, return_potential: bool = False):
    """LIF on folded currents [T*B, ...] (or ``Affine`` ones, whose map the LIF layer applies): unfold, scan over
    time, fold back."""
    if isinstance(x, Affine):
        currents = unfold_time(x.currents, timesteps)
        if use_kernel(currents, config):
            out = lif_time_major(currents, config, return_potential, (x.scale, x.shift))
        else:  # the map on the folded currents, as BatchNorm computes it: XLA fuses and rounds it as it did before
            out = lif_time_major(unfold_time(x.apply(), timesteps), config, return_potential)
    else:
        out = lif_time_major(unfold_time(x, timesteps), config, return_potential)
    if return_potential:
        return fold_time(out[0]), fold_time(out[1])
    return fold_time(out)
