"""The 2-D convolution every ConvBN layer calls (NHWC input, HWIO kernel, symmetric padding).

One function so that a faster implementation can replace it behind the
ordinary API, with tests proving equality (``tests/test_conv.py``).
Three implementations, identical in value (forward and both gradients):

  "xla"      ``jax.lax.conv_general_dilated`` and XLA's own transpose rules.
  "tuned"    the CPU default: XLA's convolution, except where another form
             is measured faster (``benchmarks/conv_layer.py``):
               * output maps of at most ``IM2COL_MAX_OUTPUT_PIXELS`` pixels
                 (SNN-VGG-16's 2x2 block): one im2col matmul, differentiated
                 as matmuls: XLA's CPU convolution runs far below the matmul
                 rate on such tiny maps;
               * 1x1 kernels (Res-SNN-19's strided shortcuts): the
                 hand-written VJP below (XLA's filter gradient of a strided 1x1
                 convolution is slow).
  "custom"   XLA's forward convolution with a hand-written VJP everywhere:
               input gradient  = a forward convolution of the output gradient
                                 with the spatially flipped, channel-transposed
                                 kernel (``lhs_dilation`` = stride);
               filter gradient = matmuls over the strided windows of the
                                 padded input (one per tap, or one im2col
                                 matmul for thin inputs);
             plus the tiny-map im2col above. It pays where the whole
             convolution backward is slow (YNNPACK's CPU convolutions, kept
             with ``JSNN_KEEP_XLA_FLAGS=1``, see ``jsnn/xla_flags.py``); with
             XLA's Eigen convolutions, which the programs select, "xla" runs
             3x3 layers faster.

The default is chosen per backend at trace time (``default_impl``); GPU/TPU
keep "xla" (cuDNN-style backends have fast native kernels; not measured here:
no device). Override it for the whole process with
``set_conv_impl("xla" | "tuned" | "custom" | None)`` or the environment
variable ``JSNN_CONV_IMPL``, or per call with ``impl=``. Results agree with
"xla" to floating-point rounding (summation order).

Under "tuned" and "custom", an f32 stride-1 convolution whose input is spikes (``input_is_spikes``: every
``ConvBN`` but the encoding layer) runs event-driven on the CPU (``jsnn.event_conv``: the forward pass and the
filter gradient visit only the input's nonzeros; the input gradient stays XLA's), each pass only where the
call's input is sparse enough for it to win (``event_conv.FORWARD_MAX_DENSITY``, ``FILTER_GRAD_MAX_DENSITY``,
decided per call by ``lax.cond``); results agree with XLA's to f32 rounding (summation order). Under "bf16" the
forward pass of such a convolution runs event-driven beside jsnn's bf16 kernel, below
``event_conv.BF16_FORWARD_MAX_DENSITY``; its gradients stay the bf16 kernel's.

Every path computes under a ``precision`` ("f32", "tf32", "bf16": ``jsnn/precision.py``): the
operands are cast to its dtype, every convolution and matmul, forward and backward, carries its
XLA precision and returns f32. Under "bf16", "tuned" and "custom" run a stride-1 convolution above
the tiny-map limit as ``jsnn.conv_kernel``'s kernel where the CPU has AMX or AVX512-BF16
(``_amx_applies``): XLA's bf16 convolutions run at about the f32 rate on both.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from jsnn import batch_split, conv_kernel, event_conv
from jsnn.precision import MatmulPolicy, matmul_policy

_DIMS = ("NHWC", "HWIO", "NHWC")
IMPLS = ("xla", "tuned", "custom")
# backend -> default implementation (measured: benchmarks/conv_layer.py). Backends
# not listed use "xla".
BACKEND_DEFAULTS = {"cpu": "tuned"}

_override: str | None = None


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose one of {IMPLS}")
    return impl


def set_conv_impl(impl: str | None) -> None:
    """Forces ``impl`` for every later trace of ``conv2d`` (None: back to the per-backend default).

    Functions already compiled by ``jax.jit`` keep the implementation they were traced with.
    """
    global _override
    _override = None if impl is None else _check_impl(impl)


def default_impl(backend: str | None = None) -> str:
    """The implementation ``conv2d`` uses when none is given: the override set with
    ``set_conv_impl``, else ``$JSNN_CONV_IMPL``, else ``BACKEND_DEFAULTS[backend]``."""
    if _override is not None:
        return _override
    env = os.environ.get("JSNN_CONV_IMPL")
    if env:
        return _check_impl(env)
    return BACKEND_DEFAULTS.get(backend or jax.default_backend(), "xla")


def _xla_conv(x, kernel, stride, padding, policy: MatmulPolicy):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [(padding, padding), (padding, padding)], dimension_numbers=_DIMS,
        precision=policy.precision, preferred_element_type=policy.result_dtype,
    )


def _input_grad(g, kernel, in_hw, stride, padding, policy: MatmulPolicy):
    """d conv / d x, as a stride-1 convolution of the (stride-dilated) output gradient."""
    kh, kw = kernel.shape[:2]
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # HWIO -> flipped HW, O<->I
    pads = []
    for size, k in zip(in_hw, (kh, kw)):
        rem = (size + 2 * padding - k) % stride  # input rows the strided windows never reached
        pads.append((k - 1 - padding, k - 1 - padding + rem))
    return jax.lax.conv_general_dilated(
        g, flipped, (1, 1), pads, lhs_dilation=(stride, stride), dimension_numbers=_DIMS,
        precision=policy.precision, preferred_element_type=policy.result_dtype,
    )


def _output_hw(in_hw, kernel_hw, stride, padding):
    """(Ho, Wo) of a conv with ``padding`` zeros on every side."""
    return tuple((size + 2 * padding - k) // stride + 1 for size, k in zip(in_hw, kernel_hw))


def _windows(x, kh, kw, stride, padding, ho, wo):
    """The kh*kw strided input windows of a conv, each [N, Ho, Wo, Cin]."""
    n, cin = x.shape[0], x.shape[3]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else x
    return [
        jax.lax.slice(xp, (0, i, j, 0), (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, cin),
                      (1, stride, stride, 1))
        for i in range(kh)
        for j in range(kw)
    ]


# Filter gradients with kh * kw * Cin below this contract one im2col matrix
# [N*Ho*Wo, kh*kw*Cin] with dY (a narrow per-tap matrix keeps the matmul's
# output too small to run fast); wider ones do one matmul per tap, which
# avoids materialising the patches (measured on 2 CPU cores, benchmarks/conv_layer.py).
IM2COL_MAX_DEPTH = 1024


def _filter_grad(x, g, kernel_shape, stride, padding, policy: MatmulPolicy):
    """d conv / d kernel: for every tap (i, j), the strided input window^T @ output gradient."""
    kh, kw, cin, cout = kernel_shape
    n, ho, wo, _ = g.shape
    g2 = g.reshape(n * ho * wo, cout)
    wins = [w.reshape(n * ho * wo, cin) for w in _windows(x, kh, kw, stride, padding, ho, wo)]
    if len(wins) > 1 and kh * kw * cin < IM2COL_MAX_DEPTH:
        patches = jnp.concatenate(wins, axis=1)  # [N*Ho*Wo, (i, j, c)] = HWI order
        return jnp.dot(patches.T, g2, precision=policy.precision,
                       preferred_element_type=policy.result_dtype).reshape(kernel_shape)
    taps = [jnp.dot(w.T, g2, precision=policy.precision, preferred_element_type=policy.result_dtype) for w in wins]
    return jnp.stack(taps).reshape(kernel_shape)


# Output maps of at most this many pixels use the im2col matmul: the crossover measured by
# benchmarks/conv_layer.py (at 2x2 the matmul wins by far; at 4x4 XLA's convolution is ahead).
IM2COL_MAX_OUTPUT_PIXELS = 4
# The same limit serves bf16 operands: at 2x2 the bf16 im2col matmul is ahead of the AMX kernel
# (jsnn/conv_kernel.py), which takes the larger maps (benchmarks/precision_conv.py; docs/speed.md). On
# 4x4 maps of 512 channels the im2col matmul timed ahead of the kernel alone, but SNN-VGG-16's and
# Res-SNN-19's bf16 steps were faster with the kernel there (alternated in one process: commit 14ee56c).


def _patches(x, kernel_shape, stride, padding):
    """[N*Ho*Wo, kh*kw*Cin]: the (kh, kw, Cin)-ordered input patch of every output pixel."""
    kh, kw, cin, _ = kernel_shape
    n = x.shape[0]
    ho, wo = _output_hw(x.shape[1:3], (kh, kw), stride, padding)
    return jnp.concatenate(_windows(x, kh, kw, stride, padding, ho, wo), axis=-1).reshape(n * ho * wo, kh * kw * cin)


_CONTRACT_LAST = (((1,), (1,)), ((), ()))  # a @ b.T
_CONTRACT_FIRST = (((0,), (0,)), ((), ()))  # a.T @ b


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _im2col_conv(x, kernel, stride, padding, policy: MatmulPolicy):
    """The convolution as one matmul of the (kh, kw, Cin)-ordered patches with the HWIO kernel.

    Its VJP is written out so that both backward matmuls take operands of the policy's dtype (bf16
    x bf16 -> f32 is the matmul a CPU's AMX runs; autodiff would multiply the f32 output gradient
    by bf16 operands, a slow mixed product) and the patches' gradient is summed back into the
    input in f32."""
    kh, kw, cin, cout = kernel.shape
    ho, wo = _output_hw(x.shape[1:3], (kh, kw), stride, padding)
    out = jnp.dot(_patches(x, kernel.shape, stride, padding), kernel.reshape(kh * kw * cin, cout),
                  precision=policy.precision, preferred_element_type=policy.result_dtype)
    return out.reshape(x.shape[0], ho, wo, cout)


def _im2col_fwd(x, kernel, stride, padding, policy):
    return _im2col_conv(x, kernel, stride, padding, policy), (x, kernel)


def _im2col_bwd(stride, padding, policy, res, g):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    g2 = g.reshape(-1, cout).astype(policy.operand_dtype)
    k2 = kernel.reshape(kh * kw * cin, cout)
    d_patches = jax.lax.dot_general(g2, k2, _CONTRACT_LAST, precision=policy.precision,
                                    preferred_element_type=policy.result_dtype)
    _, to_input = jax.vjp(lambda a: _patches(a, kernel.shape, stride, padding), jnp.zeros(x.shape, d_patches.dtype))
    dx = to_input(d_patches)[0].astype(x.dtype)
    dk = jax.lax.dot_general(_patches(x, kernel.shape, stride, padding), g2, _CONTRACT_FIRST,
                             precision=policy.precision, preferred_element_type=policy.result_dtype)
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_im2col_conv.defvjp(_im2col_fwd, _im2col_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _custom_conv(x, kernel, stride, padding, policy):
    return _xla_conv(x, kernel, stride, padding, policy)


def _custom_fwd(x, kernel, stride, padding, policy):
    return _xla_conv(x, kernel, stride, padding, policy), (x, kernel)


def _custom_bwd(stride, padding, policy, res, g):
    x, kernel = res
    g = g.astype(policy.operand_dtype)  # the backward products under the forward's policy
    dx = _input_grad(g, kernel, x.shape[1:3], stride, padding, policy).astype(x.dtype)
    dk = _filter_grad(x, g, kernel.shape, stride, padding, policy).astype(kernel.dtype)
    return dx, dk


_custom_conv.defvjp(_custom_fwd, _custom_bwd)


def _sparse_enough(nonzeros, x, max_density: float):
    """Whether at most ``max_density`` of ``x``'s values are nonzero, given their count (a traced bool)."""
    return nonzeros <= int(max_density * x.size)


def _event_forward(x, kernel, padding, nonzeros):
    """The event-driven forward pass where ``x`` (``nonzeros`` of it) is sparse enough for it to win, else XLA's
    convolution."""
    return jax.lax.cond(_sparse_enough(nonzeros, x, event_conv.FORWARD_MAX_DENSITY),
                        lambda: event_conv.forward(x, kernel, padding),
                        lambda: _xla_conv(x, kernel, 1, padding, matmul_policy("f32")))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _event_conv(x, kernel, padding):
    return _event_forward(x, kernel, padding, jnp.count_nonzero(x))


def _event_fwd(x, kernel, padding):
    nonzeros = jnp.count_nonzero(x)  # counted once: the backward pass's rule reads it too
    return _event_forward(x, kernel, padding, nonzeros), (x, kernel, nonzeros)


def _xla_filter_grad(x, g, padding):
    """d conv / d kernel of a stride-1 convolution, as XLA's own transpose rule computes it, written as a
    convolution in the standard layouts (the images' batch as input channels, the channels as batch). Inside a
    ``lax.cond`` branch XLA's CPU backend compiles the transpose rule's own form as a naive loop (hundreds of
    times slower); this form keeps its fast convolution and the same values."""
    out = jax.lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1), [(padding, padding)] * 2,
        dimension_numbers=_DIMS, precision=matmul_policy("f32").precision, preferred_element_type=jnp.float32)
    return jnp.transpose(out, (1, 2, 0, 3))  # [C, KH, KW, O] -> HWIO


def _event_bwd(padding, res, g):
    x, kernel, nonzeros = res
    # the input gradient of dense g is a dense convolution: XLA's, by its own transpose rule (the values
    # the "xla" path computes); the filter gradient event-driven where x is sparse enough, else XLA's
    _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, kernel, 1, padding, matmul_policy("f32")), x)
    dk = jax.lax.cond(_sparse_enough(nonzeros, x, event_conv.FILTER_GRAD_MAX_DENSITY),
                      lambda: event_conv.filter_grad(x, g, kernel.shape, padding),
                      lambda: _xla_filter_grad(x, g, padding))
    return input_vjp(g)[0], dk


_event_conv.defvjp(_event_fwd, _event_bwd)


# The bf16 convolution of spikes: the same event-driven kernels where they beat jsnn's bf16 kernel
# (``conv_kernel``, AMX or AVX512-BF16, about twice XLA's f32 rate), which computes the rest. Spikes are exact in
# bf16 and the kernels add f32 copies of the bf16 weights' rows in f32, so every product is the bf16
# convolution's; only the order of the f32 sums differs. The gradients stay the bf16 kernel's, both in one call:
# its input gradient alone plus the event-driven filter gradient won only at 5-15 % density, and not by much
# (benchmarks/event_conv.py, bf16 rows).
def _event_bf16_forward(x, kernel, padding, nonzeros):
    return jax.lax.cond(_sparse_enough(nonzeros, x, event_conv.BF16_FORWARD_MAX_DENSITY),
                        lambda: event_conv.forward(x.astype(jnp.float32), kernel.astype(jnp.float32), padding),
                        lambda: conv_kernel.forward(x.astype(jnp.bfloat16), kernel, padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _event_conv_bf16(x, kernel, padding):
    return _event_bf16_forward(x, kernel, padding, jnp.count_nonzero(x))


def _event_bf16_fwd(x, kernel, padding):
    return _event_bf16_forward(x, kernel, padding, jnp.count_nonzero(x)), (x, kernel)


def _event_bf16_bwd(padding, res, g):
    x, kernel = res
    xb = x.astype(jnp.bfloat16)
    dx, dk = conv_kernel.gradients(xb, kernel, g.astype(jnp.bfloat16), padding)
    # as conv_kernel.conv's VJP returns them: in the bf16 operands' dtype (what autodiff of XLA's bf16 convolution
    # gives), then in x's own
    return dx.astype(jnp.bfloat16).astype(x.dtype), dk.astype(kernel.dtype)


_event_conv_bf16.defvjp(_event_bf16_fwd, _event_bf16_bwd)


def _on_this_cpu() -> bool:
    """Whether a custom call can run here: the CPU backend, on one device or inside the trainer's per-device
    body (a custom call has no rule to split a batch-sharded convolution over devices)."""
    return jax.default_backend() == "cpu" and (jax.device_count() == 1 or batch_split.axis() is not None)


def _event_applies(x, kernel, stride: int, padding: int) -> bool:
    """Whether a convolution of spikes can run event-driven (``jsnn.event_conv``): where a custom call can run,
    for the shapes the kernels support, where they could be built."""
    return (_on_this_cpu() and event_conv.supports(x.shape, kernel.shape, stride, padding)
            and event_conv.unavailable() is None)


def _amx_applies(x, kernel, stride: int, padding: int) -> bool:
    """Whether a bf16 convolution runs as ``jsnn.conv_kernel``'s kernel: on the CPU backend, on one
    device or inside the trainer's per-device body (a custom call has no rule to split a batch-sharded
    convolution over devices), for the shapes it supports, on a CPU with AMX (granted by the system) or
    AVX512-BF16."""
    return (x.dtype == jnp.bfloat16 and _on_this_cpu() and conv_kernel.supports(x.shape, kernel.shape, stride, padding)
            and conv_kernel.unavailable() is None)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int, impl: str | None = None,
           precision: str = "f32", input_is_spikes: bool = False) -> jax.Array:
    """2-D convolution, NHWC input ``x`` [N, H, W, C], HWIO ``kernel``, ``padding`` zeros on every side.

    ``impl``: "xla", "tuned" or "custom" (see the module docstring); None picks
    ``default_impl()`` for the backend being traced for. ``precision``: "f32", "tf32" or "bf16"
    (``jsnn/precision.py``: the operands' dtype and XLA's precision; the result is f32).
    ``input_is_spikes``: ``x`` is mostly zeros (a spiking layer's input); under "tuned" and "custom" an f32
    convolution of it then runs event-driven where ``_event_applies``.
    """
    impl = default_impl() if impl is None else _check_impl(impl)
    policy = matmul_policy(precision)
    spikes = x  # the event-driven kernels read spikes in their own (f32) dtype: exact, no bf16 copy made
    x, kernel = x.astype(policy.operand_dtype), kernel.astype(policy.operand_dtype)
    if impl == "xla":
        return _xla_conv(x, kernel, stride, padding, policy)
    stride, padding = int(stride), int(padding)
    kh, kw = kernel.shape[:2]
    ho, wo = _output_hw(x.shape[1:3], (kh, kw), stride, padding)
    if ho * wo <= IM2COL_MAX_OUTPUT_PIXELS:
        return _im2col_conv(x, kernel, stride, padding, policy)
    if _amx_applies(x, kernel, stride, padding):
        if input_is_spikes and _event_applies(x, kernel, stride, padding):
            return _event_conv_bf16(spikes, kernel, padding)
        return conv_kernel.conv(x, kernel, padding)
    if input_is_spikes and x.dtype == jnp.float32 and _event_applies(x, kernel, stride, padding):
        return _event_conv(x, kernel, padding)
    if impl == "custom" or kh == kw == 1:
        return _custom_conv(x, kernel, stride, padding, policy)
    return _xla_conv(x, kernel, stride, padding, policy)
