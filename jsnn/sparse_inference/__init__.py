"""Event-driven inference for tickets: spike-input convs run by a C++ kernel over the active inputs.

``predict_sparse(model, variables, images)`` runs a ticket's model in evaluation mode exactly as
``jsnn.variables.apply_model(..., train=False)`` does, except that every ``ConvBN`` whose input is
spikes (every conv but the encoding layer) computes its convolution with
``kernel.spike_conv`` (``jax.ffi``, compiled on first use) instead of ``jsnn.conv.conv2d``:
an output pixel sums the kept weights of the active inputs under its window only. The result
equals the dense path's up to f32 summation order (``tests/test_sparse_inference.py``).

Each layer's row format is chosen from its weight density, after the crossover measured by
``benchmarks/sparse_crossover.py`` (2-core Xeon; ``benchmarks/results/sparse_crossover.md``):
ELL rows (only the kept weights) where the layer keeps at most ``ELL_MAX_DENSITY`` of its weights,
else full rows. The ELL rows are built on the host from the ticket's concrete weights, once per call
of ``sparse_layers``; pass its result to ``predict_sparse`` to reuse it.

When it pays (measured per layer, random spikes and masks, batch x T = 160): at firing rates of
5-10 % in most layers of a 90-99 % sparse ticket; at 20 % firing the full-row format loses to the
dense conv on 4x4 and 8x8 maps. The encoding conv and linear layers stay dense. No VJP: inference
only (training's spike convolutions run event-driven through ``jsnn.event_conv`` instead, forward and filter
gradient, without the ELL format: ``conv.conv2d``). The kernel runs on the CPU only: on a GPU or TPU backend
``predict_sparse`` computes every conv densely (``apply_model``), the same predictions.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from jsnn.layers import ConvBN, _batch_norm
from jsnn.sparse_inference import kernel
from jsnn.variables import Variables, apply_model, by_name, named_kernels

# Weight density at or below which a layer uses ELL rows (benchmarks/results/sparse_crossover.md:
# ELL beats full rows from 90-98 % sparsity on 8x8-2x2 maps, from 99 % on the 32x32 map)
ELL_MAX_DENSITY = 0.05

__all__ = ["predict_sparse", "sparse_layers", "ELL_MAX_DENSITY", "kernel"]


def sparse_layers(variables: Variables, ell_max_density: float = ELL_MAX_DENSITY) -> dict:
    """Per conv layer path: the kernel in the format ``spike_conv`` takes (host-side, concrete arrays)."""
    plan, masks = {}, by_name(variables.masks)
    for name, w in named_kernels(variables.weights).items():
        w = np.asarray(w)
        if w.ndim != 4:
            continue
        effective = w * np.asarray(masks[name])
        if float(np.mean(effective != 0)) <= ell_max_density:
            idx, val = kernel.ell_rows(effective)
            plan[name] = ("ell", (effective.shape, jax.numpy.asarray(idx), jax.numpy.asarray(val)))
        else:
            plan[name] = ("dense", effective)
    return plan


def predict_sparse(model: nn.Module, variables: Variables, images: jax.Array, layers: dict | None = None,
                   threads: int | None = None) -> jax.Array:
    """Logits [T, B, classes] of ``model`` in evaluation mode, spike-input convs event-driven.

    Jit-compatible in ``images`` (``variables`` and ``layers`` must be concrete: the kernel formats
    are built from their values). Raises ``kernel.CompilerMissing`` with one line without a C++ compiler.
    """
    if kernel.backend() != "cpu":  # the kernel is XLA-CPU only; the accelerator's dense conv gives the same logits
        return apply_model(model, variables, images, train=False)[0]
    kernel.load()
    layers = sparse_layers(variables) if layers is None else layers

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if not (isinstance(module, ConvBN) and context.method_name == "__call__" and module.input_is_spikes):
            return next_fun(*args, **kwargs)
        name = "/".join(module.scope.path)
        x, train = args[0], kwargs.get("train", args[1] if len(args) > 1 else False)
        if train:
            raise ValueError("predict_sparse runs inference only (train=False)")
        fmt, k = layers[name]
        y = kernel.spike_conv(x.astype(np.float32), k, module.stride, module.kernel_size // 2, fmt, threads)
        return _batch_norm(module, y.astype(x.dtype), False, module.bn)

    with nn.intercept_methods(intercept):
        logits, _, _ = apply_model(model, variables, images, train=False)
    return logits
