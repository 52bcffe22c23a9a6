"""A LIF layer over time as one C++ CPU kernel through ``jax.ffi``: the forward pass and its VJP.

XLA runs ``lax.scan``'s LIF either as a while loop, which reads and writes the membrane potential and
its residuals once per step, or unrolled into straight-line code whose cost grows faster than T
(``python benchmarks/lif_unroll.py``). This kernel keeps each block of neurons' potential in cache
for all T steps, so it reads the currents and writes the spikes once; for training (or when asked for
them) it also writes the potentials U (Eq. 2, before reset), the one residual its backward pass reads:

    forward   U[t] = H[t-1] + X[t];  S[t] = [U[t] - V_th >= 0];  H[t] from U[t], S[t] (Eq. 4)
    backward  G[t] = dL/dS[t] * g(U[t] - V_th) (+ dL/dH[t] * dH/dS, without ``detach_reset``)
                     + dL/dH[t] * dH/dU (+ dL/dU[t], where U is an output);   dL/dX[t] = dL/dH[t-1] = G[t]

with g the surrogate derivative. The arithmetic is the scan's, written out with the same operations
in the same order and compiled without contracting multiply-adds (``-ffp-contract=off``): spikes and
potentials equal the scan's bit for bit; gradients agree to rounding, since XLA contracts some
multiply-adds into FMAs (which ones depends on its fusion; it does so in the atan surrogate's
``1 + y*y``). ``tests/test_lif_kernel.py`` checks both against the scan for every supported
configuration.

A layer fed by a conv can be given the conv's output and its BatchNorm's per-channel map instead of BatchNorm's
output (``lif_spikes(..., affine=(scale, shift))``; ``jsnn.layers.Affine``): the forward pass then computes
X[t] = x * scale + shift as it reads the currents, and BatchNorm's output is never written out.

Supported: f32 currents, hard or soft reset, with or without ``detach_reset``, and the surrogate
families written here (``SURROGATES``: atan, rectangle, triangle; the sigmoid's logistic is XLA's own
approximation and stays on the scan). The neurons are split over ``jsnn.native.default_threads()``
std::threads. CPU only; ``jsnn.neuron`` decides where it runs (``JSNN_LIF_IMPL``). Over several devices
each call is split as its operands are, over every axis but time (``_partitioned``).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from jsnn import batch_split, native

SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

struct Params {
  float decay, vth, reset_value, c1, c2;
  int64_t hard, detach, family, threads;
};

// The surrogate derivative g(x) at x = U - V_th, as jsnn/surrogate.py writes it (c1, c2: its constants).
template <int F> static inline float surrogate(const Params& p, float x) {
  if (F == 0) {  // atan: alpha/2 / (1 + (pi/2 alpha x)^2); c1 = alpha/2, c2 = pi/2 alpha
    const float y = p.c2 * x;
    return p.c1 / (1.0f + y * y);
  }
  if (F == 1) return std::fabs(x) < p.c1 ? p.c2 : 0.0f;  // rectangle: c1 = a/2, c2 = 1/a
  return std::max(0.0f, 1.0f - std::fabs(x) / p.c1) / p.c1;  // triangle: c1 = gamma
}

// Neurons per block: the block's potentials (16 KiB) stay in L1 while it walks over T.
constexpr int64_t BLOCK = 4096;

template <typename F> static void in_parallel(int64_t n, int64_t t, int64_t threads, F f) {
  const int64_t blocks = (n + BLOCK - 1) / BLOCK;
  // a thread only where it gets at least 2^16 elements: starting one costs tens of microseconds
  threads = std::max<int64_t>(1, std::min({threads, blocks, (n * t) >> 16}));
  if (threads == 1) return f(int64_t{0}, n);
  std::vector<std::thread> pool;
  const int64_t per = (blocks + threads - 1) / threads;
  for (int64_t i = 1; i < threads; ++i) {
    const int64_t a = std::min(n, i * per * BLOCK), b = std::min(n, (i + 1) * per * BLOCK);
    if (a < b) pool.emplace_back(f, a, b);
  }
  f(int64_t{0}, std::min(n, per * BLOCK));
  for (auto& th : pool) th.join();
}

// The input X[t] is the currents as given, or (AFFINE) their per-channel map x * scale[c] + shift[c] over the
// last axis (C channels): the BatchNorm that precedes the layer, so that its output is never written out. One
// fused multiply-add, as XLA's CPU backend computes BatchNorm's x * A + B.
template <bool HARD, bool WRITE_U, bool AFFINE>
static void forward(const Params& p, const float* x, const float* scale, const float* shift, int64_t C, float* s,
                    float* u, int64_t T, int64_t N, int64_t a, int64_t b) {
  alignas(64) float h[BLOCK];
  alignas(64) float sc[AFFINE ? BLOCK : 1];
  alignas(64) float sh[AFFINE ? BLOCK : 1];
  for (int64_t n0 = a; n0 < b; n0 += BLOCK) {
    const int64_t m = std::min(BLOCK, b - n0);
    for (int64_t i = 0; i < m; ++i) h[i] = 0.0f;
    if (AFFINE) {
      for (int64_t i = 0, c = n0 % C; i < m; ++i, c = c + 1 == C ? 0 : c + 1) {
        sc[i] = scale[c];
        sh[i] = shift[c];
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * N + n0;
      float* st = s + t * N + n0;
      float* ut = WRITE_U ? u + t * N + n0 : nullptr;
      for (int64_t i = 0; i < m; ++i) {
        const float xi = AFFINE ? std::fma(xt[i], sc[i], sh[i]) : xt[i];
        const float uu = h[i] + xi;
        const float ss = (uu - p.vth) >= 0.0f ? 1.0f : 0.0f;
        st[i] = ss;
        if (WRITE_U) ut[i] = uu;
        h[i] = HARD ? p.reset_value * ss + p.decay * uu * (1.0f - ss) : p.decay * (uu - p.vth * ss);
      }
    }
  }
}

template <int F, bool HARD, bool DETACH, bool GU>
static void backward(const Params& p, const float* u, const float* gs, const float* gpot, float* gx, int64_t T,
                     int64_t N, int64_t a, int64_t b) {
  alignas(64) float gh[BLOCK];  // dL/dH[t], carried back from step t + 1
  for (int64_t n0 = a; n0 < b; n0 += BLOCK) {
    const int64_t m = std::min(BLOCK, b - n0);
    for (int64_t i = 0; i < m; ++i) gh[i] = 0.0f;
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* ut = u + t * N + n0;
      const float* gt = gs + t * N + n0;
      float* ot = gx + t * N + n0;
      for (int64_t i = 0; i < m; ++i) {
        const float uu = ut[i], d = uu - p.vth, ss = d >= 0.0f ? 1.0f : 0.0f, g = gh[i];
        float g_spike = gt[i];
        if (!DETACH) g_spike = g_spike + (HARD ? g * p.reset_value - g * (p.decay * uu) : -(g * p.decay) * p.vth);
        const float g_direct = HARD ? (g * (1.0f - ss)) * p.decay : g * p.decay;
        float gu = g_spike * surrogate<F>(p, d) + g_direct;
        if (GU) gu = gu + gpot[t * N + n0 + i];  // dL/dU[t] where the potentials are an output too
        ot[i] = gu;
        gh[i] = gu;
      }
    }
  }
}

static Params params(float decay, float vth, float reset_value, int64_t hard, int64_t detach, int64_t family,
                     float c1, float c2, int64_t threads) {
  return Params{decay, vth, reset_value, c1, c2, hard, detach, family, threads};
}

template <bool AFFINE>
static void forward_for(const Params& p, const float* x, const float* scale, const float* shift, int64_t C, float* s,
                        float* u, int64_t T, int64_t N, int64_t a, int64_t b) {
  if (p.hard && u) forward<true, true, AFFINE>(p, x, scale, shift, C, s, u, T, N, a, b);
  else if (p.hard) forward<true, false, AFFINE>(p, x, scale, shift, C, s, u, T, N, a, b);
  else if (u) forward<false, true, AFFINE>(p, x, scale, shift, C, s, u, T, N, a, b);
  else forward<false, false, AFFINE>(p, x, scale, shift, C, s, u, T, N, a, b);
}

// scale, shift: nullptr for the currents as given
static void run_forward(const Params& p, const float* x, const float* scale, const float* shift, int64_t C, float* s,
                        float* u, int64_t T, int64_t N) {
  in_parallel(N, T, p.threads, [&](int64_t a, int64_t b) {
    if (scale) forward_for<true>(p, x, scale, shift, C, s, u, T, N, a, b);
    else forward_for<false>(p, x, scale, shift, C, s, u, T, N, a, b);
  });
}

template <int F, bool GU>
static void backward_for(const Params& p, const float* u, const float* gs, const float* gpot, float* gx, int64_t T,
                         int64_t N, int64_t a, int64_t b) {
  if (p.hard && p.detach) backward<F, true, true, GU>(p, u, gs, gpot, gx, T, N, a, b);
  else if (p.hard) backward<F, true, false, GU>(p, u, gs, gpot, gx, T, N, a, b);
  else if (p.detach) backward<F, false, true, GU>(p, u, gs, gpot, gx, T, N, a, b);
  else backward<F, false, false, GU>(p, u, gs, gpot, gx, T, N, a, b);
}

template <bool GU>
static void run_backward(const Params& p, const float* u, const float* gs, const float* gpot, float* gx, int64_t T,
                         int64_t N) {
  in_parallel(N, T, p.threads, [&](int64_t a, int64_t b) {
    if (p.family == 0) backward_for<0, GU>(p, u, gs, gpot, gx, T, N, a, b);
    else if (p.family == 1) backward_for<1, GU>(p, u, gs, gpot, gx, T, N, a, b);
    else backward_for<2, GU>(p, u, gs, gpot, gx, T, N, a, b);
  });
}

#define LIF_ATTRS float decay, float vth, float reset_value, int64_t hard, int64_t detach, int64_t family, \
                  float c1, float c2, int64_t threads
#define LIF_PARAMS params(decay, vth, reset_value, hard, detach, family, c1, c2, threads)
#define LIF_BIND_ATTRS .Attr<float>("decay").Attr<float>("vth").Attr<float>("reset_value").Attr<int64_t>("hard") \
  .Attr<int64_t>("detach").Attr<int64_t>("family").Attr<float>("c1").Attr<float>("c2").Attr<int64_t>("threads")

static int64_t steps(const ffi::Buffer<ffi::F32>& x) { return x.dimensions()[0]; }

static ffi::Error Spikes(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> s, LIF_ATTRS) {
  const int64_t T = steps(x), N = x.element_count() / std::max<int64_t>(T, 1);
  run_forward(LIF_PARAMS, x.typed_data(), nullptr, nullptr, 1, s->typed_data(), nullptr, T, N);
  return ffi::Error::Success();
}

static ffi::Error SpikesAndPotentials(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> s,
                                      ffi::ResultBuffer<ffi::F32> u, LIF_ATTRS) {
  const int64_t T = steps(x), N = x.element_count() / std::max<int64_t>(T, 1);
  run_forward(LIF_PARAMS, x.typed_data(), nullptr, nullptr, 1, s->typed_data(), u->typed_data(), T, N);
  return ffi::Error::Success();
}

// scale and shift: one value per channel of x's last axis (C), checked against it
static ffi::Error AffineForward(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& scale, ffi::Buffer<ffi::F32>& shift,
                               float* s, float* u, const Params& p) {
  const int64_t T = steps(x), N = x.element_count() / std::max<int64_t>(T, 1), C = scale.element_count();
  if (x.dimensions().size() < 2 || x.dimensions().back() != C || shift.element_count() != C)
    return ffi::Error::InvalidArgument("the LIF kernel's scale and shift need one value per channel (last axis)");
  run_forward(p, x.typed_data(), scale.typed_data(), shift.typed_data(), C, s, u, T, N);
  return ffi::Error::Success();
}

static ffi::Error AffineSpikes(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                               ffi::ResultBuffer<ffi::F32> s, LIF_ATTRS) {
  return AffineForward(x, scale, shift, s->typed_data(), nullptr, LIF_PARAMS);
}

static ffi::Error AffineSpikesAndPotentials(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                                            ffi::Buffer<ffi::F32> shift, ffi::ResultBuffer<ffi::F32> s,
                                            ffi::ResultBuffer<ffi::F32> u, LIF_ATTRS) {
  return AffineForward(x, scale, shift, s->typed_data(), u->typed_data(), LIF_PARAMS);
}

static ffi::Error Backward(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> gs, ffi::ResultBuffer<ffi::F32> gx,
                           LIF_ATTRS) {
  const int64_t T = steps(u), N = u.element_count() / std::max<int64_t>(T, 1);
  run_backward<false>(LIF_PARAMS, u.typed_data(), gs.typed_data(), nullptr, gx->typed_data(), T, N);
  return ffi::Error::Success();
}

static ffi::Error BackwardWithPotentials(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> gs, ffi::Buffer<ffi::F32> gu,
                                         ffi::ResultBuffer<ffi::F32> gx, LIF_ATTRS) {
  const int64_t T = steps(u), N = u.element_count() / std::max<int64_t>(T, 1);
  run_backward<true>(LIF_PARAMS, u.typed_data(), gs.typed_data(), gu.typed_data(), gx->typed_data(), T, N);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifSpikes, Spikes,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  LIF_BIND_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifSpikesAndPotentials, SpikesAndPotentials,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() LIF_BIND_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifAffineSpikes, AffineSpikes,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>() LIF_BIND_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifAffineSpikesAndPotentials, AffineSpikesAndPotentials,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() LIF_BIND_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifBackward, Backward,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() LIF_BIND_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnLifBackwardWithPotentials, BackwardWithPotentials,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>() LIF_BIND_ATTRS);
"""

# -ffp-contract=off: each multiply and add rounds on its own, as the scan's forward pass does in XLA
FLAGS = (*native.FLAGS, "-ffp-contract=off")
WHAT = "the LIF kernel"
TARGETS = {"spikes": "jsnn_lif_spikes", "spikes_and_potentials": "jsnn_lif_spikes_and_potentials",
           "affine_spikes": "jsnn_lif_affine_spikes",
           "affine_spikes_and_potentials": "jsnn_lif_affine_spikes_and_potentials",
           "backward": "jsnn_lif_backward", "backward_with_potentials": "jsnn_lif_backward_with_potentials"}
_SYMBOLS = {"spikes": "JsnnLifSpikes", "spikes_and_potentials": "JsnnLifSpikesAndPotentials",
            "affine_spikes": "JsnnLifAffineSpikes", "affine_spikes_and_potentials": "JsnnLifAffineSpikesAndPotentials",
            "backward": "JsnnLifBackward", "backward_with_potentials": "JsnnLifBackwardWithPotentials"}
SURROGATES = ("atan", "rectangle", "triangle")  # family index = position


def build(cache_dir: str | None = None) -> str:
    """Compiles the kernel (once per source, flags, compiler and CPU) and returns the shared library's path."""
    return native.build("lif", SOURCE, FLAGS, cache_dir or native.cache_dir("lif"), WHAT)


@functools.lru_cache(maxsize=None)
def load() -> None:
    """Builds (if needed) and registers the FFI targets with XLA's CPU backend, once per process."""
    native.register(build(), {target: _SYMBOLS[key] for key, target in TARGETS.items()})


def supports(config) -> str | None:
    """Why the kernel cannot run this ``LIFConfig`` (one line), or None where it can."""
    if config.surrogate.name not in SURROGATES:
        return f"the LIF kernel has no {config.surrogate.name!r} surrogate (it has {', '.join(SURROGATES)})"
    return None


def _attributes(config) -> dict:
    family = SURROGATES.index(config.surrogate.name)
    w = config.surrogate.width
    # the constants jsnn/surrogate.py's derivatives fold from their Python floats
    c1, c2 = ((w / 2.0, math.pi / 2.0 * w), (w / 2.0, 1.0 / w), (w, 0.0))[family]
    return dict(decay=np.float32(config.decay), vth=np.float32(config.threshold),
                reset_value=np.float32(config.reset_value), hard=np.int64(config.reset == "hard"),
                detach=np.int64(config.detach_reset), family=np.int64(family), c1=np.float32(c1),
                c2=np.float32(c2), threads=np.int64(native.default_threads()))


def _whole_in_time(sharding, ndim: int) -> NamedSharding:
    """``sharding`` with the time axis (0) unsharded: each device runs the kernel over all T of its neurons."""
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return NamedSharding(sharding.mesh, PartitionSpec(None, *spec[1:]))


def _partitioned(ffi, n_in: int, n_out: int, ndim: int):
    """``ffi`` (n_in arrays of one shape in, n_out of it out) as an op XLA's partitioner splits over every
    axis but time, as the elementwise-over-neurons op it is, instead of gathering its operands onto each
    device (what it does with an opaque call); a vmap over it maps one slice at a time."""

    def partition(mesh, arg_shapes, result_shape):
        s = _whole_in_time(arg_shapes[0].sharding, ndim)
        return mesh, ffi, (s,) * n_out if n_out > 1 else s, (s,) * n_in

    def infer(mesh, arg_shapes, result_shape):
        s = _whole_in_time(arg_shapes[0].sharding, ndim)
        return (s,) * n_out if n_out > 1 else s

    dims = " ".join(["t", *(f"d{i}" for i in range(1, ndim))])
    rule = ", ".join([dims] * n_in) + " -> " + ", ".join([dims] * n_out)
    # custom_partitioning inspects the signature: one named parameter per operand
    op = custom_partitioning([lambda a: ffi(a), lambda a, b: ffi(a, b), lambda a, b, c: ffi(a, b, c)][n_in - 1])
    op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     need_replication_factors=("t",))

    @jax.custom_batching.custom_vmap
    def mapped(*args):
        return op(*args)

    @mapped.def_vmap
    def one_slice_at_a_time(axis_size, in_batched, *args):
        args = tuple(a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(args, in_batched))
        return jax.lax.map(lambda xs: mapped(*xs), args), (True,) * n_out if n_out > 1 else True

    return mapped


@functools.lru_cache(maxsize=None)
def _lif(config, with_potentials: bool, affine: bool):
    """The layer for ``config`` as a differentiable function of its currents ``x`` (``affine``: of ``x, scale,
    shift``, the input being x * scale + shift), returning the spikes (``with_potentials``: and U)."""
    attrs = _attributes(config)

    def call(target, args, n_out):
        def ffi(*args):  # on whatever shape it is given: the whole array, or one device's part of it
            out = jax.ShapeDtypeStruct(args[0].shape, args[0].dtype)
            # under vmap the mapped axis would come first and be read as time: map it one slice at a time
            return jax.ffi.ffi_call(TARGETS[target], (out,) * n_out if n_out > 1 else out,
                                    vmap_method="sequential")(*args, **attrs)

        if jax.device_count() == 1 or batch_split.axis() is not None:  # one device's own arrays
            return ffi(*args)
        return _partitioned(ffi, len(args), n_out, args[0].ndim)(*args)

    prefix = "affine_" if affine else ""
    forward = prefix + "spikes_and_potentials"  # what the backward pass needs: U
    backward = "backward_with_potentials" if with_potentials else "backward"

    @jax.custom_vjp
    def layer(*args):
        return call(forward, args, 2) if with_potentials else call(prefix + "spikes", args, 1)

    def fwd(*args):
        s, u = call(forward, args, 2)
        # U, the kernel's one residual; the map's VJP also reads x and scale
        return ((s, u) if with_potentials else s), (u, *args[:2]) if affine else (u,)

    def bwd(res, g):
        gz = call(backward, (res[0], *g) if with_potentials else (res[0], g), 1)  # dL/d(the layer's input)
        if not affine:
            return (gz,)
        # the map's VJP, written here for XLA to fuse with BatchNorm's backward pass
        _, x, scale = res
        axes = tuple(range(gz.ndim - 1))
        return gz * scale, jnp.sum(gz * x, axes), jnp.sum(gz, axes)

    layer.defvjp(fwd, bwd)
    return layer


def lif_spikes(currents: jax.Array, config, return_potential: bool = False, affine=None):
    """Spikes ``[T, ...]`` of a LIF layer over f32 currents ``[T, ...]``, differentiable (surrogate VJP);
    with ``return_potential``, ``(spikes, potentials U)`` (U differentiable too).

    ``affine``: ``(scale, shift)``, one f32 value per channel of the last axis: the layer's input is then
    ``currents * scale + shift`` (a BatchNorm's, ``jsnn.layers.Affine``), computed inside the kernel instead
    of written out first; differentiable in all three."""
    reason = supports(config)
    if reason:
        raise ValueError(reason)
    if currents.dtype != np.float32:
        raise ValueError(f"the LIF kernel takes f32 currents, got {currents.dtype}")
    if jax.default_backend() != "cpu":
        raise ValueError(f"the LIF kernel runs on the CPU only, and JAX computes on {jax.default_backend()}: "
                         "leave JSNN_LIF_IMPL unset (auto) or set it to scan")
    load()
    if affine is None:
        return _lif(config, return_potential, False)(currents)
    scale, shift = (jnp.asarray(a, np.float32) for a in affine)
    if currents.ndim < 2 or scale.shape != currents.shape[-1:] or shift.shape != currents.shape[-1:]:
        raise ValueError(f"the LIF kernel's scale and shift need one value per channel of the currents' last axis "
                         f"({currents.shape}), got {scale.shape} and {shift.shape}")
    if jax.device_count() > 1 and batch_split.axis() is None:
        # split over devices by XLA's partitioner (``_partitioned``), whose rule covers operands of the currents'
        # shape only: the map is applied first, as XLA computes BatchNorm's (one fused multiply-add)
        return _lif(config, return_potential, False)(currents * scale + shift)
    return _lif(config, return_potential, True)(currents, scale, shift)
