"""An event-driven 2-D convolution for binary (spike) inputs, as a small C++ CPU kernel through ``jax.ffi``.

Output-driven gather: for every output pixel of an image, the kernel walks the
kh*kw input pixels under its window, and for each *active* input channel c at
tap (i, j) (a nonzero input value v) adds v * (the kept weights of row (i, j, c))
into that pixel's Cout accumulators. The work is proportional to
nnz(inputs) x (weights kept per (tap, input channel)), not to the dense
kh*kw*Cin*Cout per pixel. Two row formats:

  "dense"  each (i, j, c) row holds all Cout weights (pruned ones are 0): vector
           adds into accumulators held in registers, output channels in tiles of
           64-128 so that a tile's weights stay in cache (work ∝ firing rate only);
  "ell"    each row holds only its kept weights, as (output channel, value) pairs,
           padded to the layer's longest row (ELL) so the inner loop has one trip
           count (work ∝ firing rate x the longest row; scalar scatters).

Images are split over ``threads`` std::threads (the batch dimension, T*B folded).
A binary input makes every output a sum of selected weights; only the summation
order differs from a dense convolution, so outputs agree to f32 rounding.

The source is compiled on first use by ``jsnn.native`` (cached per source, compiler, flags and the
host's CPU features); without a compiler ``load`` raises ``CompilerMissing`` with one line that says so.

The kernel is registered with XLA's CPU backend only: on a GPU or TPU backend ``spike_conv`` raises
``NotOnCPU`` in one line (``predict_sparse`` computes there with the dense convolution instead).
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from jsnn import native
from jsnn.conv import _output_hw
from jsnn.native import CompilerMissing, cpu_features  # noqa: F401  (this module's names before jsnn.native)

SOURCE = r"""
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// 16 floats; GCC lowers it to one AVX-512 register, two AVX2 or four SSE registers.
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // unaligned loads / stores

struct Geometry {
  int64_t n, h, w, cin, ho, wo, cout, kh, kw, stride, pad;
};

// The nonzero inputs of images [n0, n1): for pixel p (images in order), entries
// start[p] .. start[p + 1] of (channel, value).
struct Events {
  std::vector<int64_t> start;
  std::vector<int32_t> chan;
  std::vector<float> val;
};

static void collect(const float* x, const Geometry& g, int64_t n0, int64_t n1, Events& ev) {
  const int64_t pixels = (n1 - n0) * g.h * g.w;
  const float* x0 = x + n0 * g.h * g.w * g.cin;
  ev.start.resize(pixels + 1);
  ev.start[0] = 0;
  for (int64_t p = 0; p < pixels; ++p) {  // pass 1: counts (branch-free, vectorised)
    const float* px = x0 + p * g.cin;
    int64_t k = 0;
    for (int64_t c = 0; c < g.cin; ++c) k += px[c] != 0.0f;
    ev.start[p + 1] = ev.start[p] + k;
  }
  ev.chan.resize(ev.start[pixels] + 1);  // + 1: the branch-free fill writes one slot past the last
  ev.val.resize(ev.start[pixels] + 1);
  int32_t* ch = ev.chan.data();
  float* va = ev.val.data();
  int64_t k = 0;
  for (int64_t p = 0; p < pixels; ++p) {  // pass 2: write every value, advance only past nonzeros
    const float* px = x0 + p * g.cin;
    for (int64_t c = 0; c < g.cin; ++c) {
      const float v = px[c];
      ch[k] = (int32_t)c;
      va[k] = v;
      k += v != 0.0f;
    }
  }
}

// The nonzero inputs under output pixel (yo, xo) of local image m, as kernel row offsets
// ((i * kw + j) * cin + c) * stride_o and values; returns how many.
static inline int64_t window(const Events& ev, const Geometry& g, int64_t m, int64_t yo, int64_t xo,
                             int64_t row_stride, int64_t* off, float* val) {
  int64_t e = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t yi = yo * g.stride + i - g.pad;
    if (yi < 0 || yi >= g.h) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t xi = xo * g.stride + j - g.pad;
      if (xi < 0 || xi >= g.w) continue;
      const int64_t p = (m * g.h + yi) * g.w + xi;
      const int64_t row0 = (i * g.kw + j) * g.cin;
      for (int64_t k = ev.start[p], ke = ev.start[p + 1]; k < ke; ++k) {
        off[e] = (row0 + ev.chan[k]) * row_stride;
        val[e++] = ev.val[k];
      }
    }
  }
  return e;
}

// Dense rows: output channels in tiles of NV * 16 held in registers (two sets, even and odd
// events, to hide the add latency); the tile loop is outermost so that one tile's weights
// (kh*kw*cin*NV*16 floats) stay in cache over all images.
template <int NV>
static void dense_tile(const Events& ev, const Geometry& g, int64_t n0, int64_t n1, const float* w, float* y,
                       int64_t o0, int64_t* off, float* val) {
  const float* wt = w + o0;
  for (int64_t m = 0; m < n1 - n0; ++m) {
    for (int64_t yo = 0; yo < g.ho; ++yo) {
      for (int64_t xo = 0; xo < g.wo; ++xo) {
        const int64_t ne = window(ev, g, m, yo, xo, g.cout, off, val);
        v16 a[NV], b[NV];
        for (int q = 0; q < NV; ++q) a[q] = b[q] = v16{};
        int64_t e = 0;
        for (; e + 1 < ne; e += 2) {
          const float* w0 = wt + off[e];
          const float* w1 = wt + off[e + 1];
          const float v0 = val[e], v1 = val[e + 1];
          for (int q = 0; q < NV; ++q) {
            a[q] += v0 * *(const v16u*)(w0 + 16 * q);
            b[q] += v1 * *(const v16u*)(w1 + 16 * q);
          }
        }
        if (e < ne) {
          const float* w0 = wt + off[e];
          for (int q = 0; q < NV; ++q) a[q] += val[e] * *(const v16u*)(w0 + 16 * q);
        }
        float* out = y + (((n0 + m) * g.ho + yo) * g.wo + xo) * g.cout + o0;
        for (int q = 0; q < NV; ++q) *(v16u*)(out + 16 * q) = a[q] + b[q];
      }
    }
  }
}

static void dense_rest(const Events& ev, const Geometry& g, int64_t n0, int64_t n1, const float* w, float* y,
                       int64_t o0, int64_t* off, float* val) {  // the last cout % 16 channels
  const int64_t width = g.cout - o0;
  std::vector<float> acc(width);
  for (int64_t m = 0; m < n1 - n0; ++m)
    for (int64_t yo = 0; yo < g.ho; ++yo)
      for (int64_t xo = 0; xo < g.wo; ++xo) {
        const int64_t ne = window(ev, g, m, yo, xo, g.cout, off, val);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t e = 0; e < ne; ++e)
          for (int64_t o = 0; o < width; ++o) acc[o] += val[e] * w[off[e] + o0 + o];
        std::memcpy(y + (((n0 + m) * g.ho + yo) * g.wo + xo) * g.cout + o0, acc.data(), width * sizeof(float));
      }
}

static void dense_images(const float* x, const Geometry& g, int64_t n0, int64_t n1, const float* w, float* y) {
  Events ev;
  collect(x, g, n0, n1, ev);
  std::vector<int64_t> off(g.kh * g.kw * g.cin);
  std::vector<float> val(g.kh * g.kw * g.cin);
  // 128-wide tiles while a tile's weights fit in ~1 MiB of cache, else 64-wide
  const bool wide = g.kh * g.kw * g.cin * 128 * 4 <= (1 << 20);
  int64_t o = 0;
  if (wide)
    for (; o + 128 <= g.cout; o += 128) dense_tile<8>(ev, g, n0, n1, w, y, o, off.data(), val.data());
  for (; o + 64 <= g.cout; o += 64) dense_tile<4>(ev, g, n0, n1, w, y, o, off.data(), val.data());
  for (; o + 16 <= g.cout; o += 16) dense_tile<1>(ev, g, n0, n1, w, y, o, off.data(), val.data());
  if (o < g.cout) dense_rest(ev, g, n0, n1, w, y, o, off.data(), val.data());
}

// ELL rows: every (tap, input channel) row holds exactly K (output channel, weight) pairs,
// the kept weights padded with (cout + slot, 0) that land in spare accumulators: a fixed trip count.
static void ell_images(const float* x, const Geometry& g, int64_t n0, int64_t n1, const int32_t* idx,
                       const float* wval, int64_t K, float* y) {
  Events ev;
  collect(x, g, n0, n1, ev);
  std::vector<int64_t> off(g.kh * g.kw * g.cin);
  std::vector<float> val(g.kh * g.kw * g.cin);
  std::vector<float> acc(g.cout + K);  // padding slot q lands in acc[cout + q]: no false dependency chain
  float* a = acc.data();
  for (int64_t m = 0; m < n1 - n0; ++m)
    for (int64_t yo = 0; yo < g.ho; ++yo)
      for (int64_t xo = 0; xo < g.wo; ++xo) {
        const int64_t ne = window(ev, g, m, yo, xo, K, off.data(), val.data());
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t e = 0; e < ne; ++e) {
          const int32_t* ir = idx + off[e];
          const float* vr = wval + off[e];
          const float v = val[e];
          for (int64_t q = 0; q < K; ++q) a[ir[q]] += v * vr[q];
        }
        std::memcpy(y + (((n0 + m) * g.ho + yo) * g.wo + xo) * g.cout, a, g.cout * sizeof(float));
      }
}

static Geometry geometry(ffi::Buffer<ffi::F32>& x, ffi::ResultBuffer<ffi::F32>& y, int64_t kh, int64_t kw,
                         int64_t stride, int64_t pad) {
  auto xd = x.dimensions();
  auto yd = y->dimensions();
  return Geometry{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], kh, kw, stride, pad};
}

template <class F>
static void over_threads(int64_t n, int64_t threads, F&& f) {
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(threads, n));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < nt; ++t) pool.emplace_back([&f, n, nt, t] { f(n * t / nt, n * (t + 1) / nt); });
  f(0, n / nt);
  for (auto& th : pool) th.join();
}

static ffi::Error Dense(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y,
                        int64_t kh, int64_t kw, int64_t stride, int64_t pad, int64_t threads) {
  if (x.dimensions().size() != 4 || y->dimensions().size() != 4)
    return ffi::Error::InvalidArgument("expected NHWC input and output");
  const Geometry g = geometry(x, y, kh, kw, stride, pad);
  const float* xp = x.typed_data();
  const float* wp = kernel.typed_data();
  float* yp = y->typed_data();
  over_threads(g.n, threads, [&](int64_t n0, int64_t n1) { dense_images(xp, g, n0, n1, wp, yp); });
  return ffi::Error::Success();
}

static ffi::Error Ell(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> indices, ffi::Buffer<ffi::F32> values,
                      ffi::ResultBuffer<ffi::F32> y, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                      int64_t threads) {
  if (x.dimensions().size() != 4 || y->dimensions().size() != 4 || indices.dimensions().size() != 2)
    return ffi::Error::InvalidArgument("expected NHWC input and output, [rows, K] ELL weights");
  const Geometry g = geometry(x, y, kh, kw, stride, pad);
  const int64_t K = indices.dimensions()[1];
  const float* xp = x.typed_data();
  const int32_t* ip = indices.typed_data();
  const float* vp = values.typed_data();
  float* yp = y->typed_data();
  over_threads(g.n, threads, [&](int64_t n0, int64_t n1) { ell_images(xp, g, n0, n1, ip, vp, K, yp); });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnSpikeConvDense, Dense,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnSpikeConvEll, Ell,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("threads"));
"""

FLAGS = native.FLAGS
WHAT = "the event-driven spike conv"
TARGETS = {"dense": "jsnn_spike_conv_dense", "ell": "jsnn_spike_conv_ell"}
_SYMBOLS = {"dense": "JsnnSpikeConvDense", "ell": "JsnnSpikeConvEll"}


class NotOnCPU(ValueError):
    """The kernel runs on XLA's CPU backend only."""


def backend() -> str:
    """The backend JAX computes on by default (a function, so tests can fake a GPU)."""
    return jax.default_backend()


def check_backend() -> None:
    """One line, not an XLA compile error, when the default backend is not the CPU."""
    if backend() != "cpu":
        raise NotOnCPU(f"the event-driven spike conv runs on the CPU only, and JAX computes on {backend()}: use "
                       "the dense path there (predict_sparse does), or JAX_PLATFORMS=cpu to run it on the host")


def library_path(cxx: list[str], cache_dir: str | None = None) -> str:
    """Where the build for this source, compiler, flags, jax headers and CPU is cached."""
    return native.library_path("spike_conv", SOURCE, cxx, FLAGS, cache_dir or native.cache_dir("sparse_inference"))


def build(cache_dir: str | None = None) -> str:
    """Compiles the kernel (once per source, flags, compiler and CPU) and returns the shared library's path."""
    return native.build("spike_conv", SOURCE, FLAGS, cache_dir or native.cache_dir("sparse_inference"), WHAT)


@functools.lru_cache(maxsize=None)
def load() -> None:
    """Builds (if needed) and registers both FFI targets with XLA's CPU backend, once per process."""
    native.register(build(), {target: _SYMBOLS[fmt] for fmt, target in TARGETS.items()})


def ell_rows(kernel: np.ndarray):
    """The HWIO kernel's nonzero weights as ELL rows over (i, j, c): ``(indices, values)``, each
    [kh*kw*cin, K] with K the largest number kept in one row; shorter rows are padded with
    weight 0 into spare accumulators (slot q of a row: ``cout + q``). K is at least 1."""
    kernel = np.asarray(kernel, np.float32)
    kh, kw, cin, cout = kernel.shape
    rows = kernel.reshape(kh * kw * cin, cout)
    nz = rows != 0
    counts = nz.sum(axis=1)
    K = max(1, int(counts.max(initial=0)))
    indices = np.broadcast_to(cout + np.arange(K, dtype=np.int32), (rows.shape[0], K)).copy()
    values = np.zeros((rows.shape[0], K), np.float32)
    r, o = np.nonzero(nz)  # row-major: output channels ascending within a row
    slot = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
    indices[r, slot] = o
    values[r, slot] = rows[r, o]
    return indices, values


def spike_conv(x: jax.Array, kernel, stride: int, padding: int, fmt: str = "dense", threads: int | None = None):
    """Conv of NHWC ``x`` (binary or sparse) with an HWIO ``kernel``, event-driven over x's nonzeros.

    ``fmt="dense"``: ``kernel`` is the HWIO array. ``fmt="ell"``: ``kernel`` is
    ``(kernel_shape, indices, values)`` with ``indices, values = ell_rows(hwio)`` (built once per ticket).
    Forward only (inference): no VJP is defined. On a GPU or TPU backend: ``NotOnCPU``.
    """
    check_backend()
    load()
    threads = native.default_threads() if threads is None else int(threads)
    if fmt == "dense":
        shape, args = kernel.shape, (x, kernel)
    elif fmt == "ell":
        shape, args = kernel[0], (x, *kernel[1:])
    else:
        raise ValueError(f"unknown row format {fmt!r}; choose 'dense' or 'ell'")
    kh, kw, cin, cout = shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(f"input {x.shape} does not match kernel {tuple(shape)}")
    n, h, w, _ = x.shape
    ho, wo = _output_hw((h, w), (kh, kw), stride, padding)
    out = jax.ShapeDtypeStruct((n, ho, wo, cout), np.float32)
    call = jax.ffi.ffi_call(TARGETS[fmt], out)
    return call(*args, kh=np.int64(kh), kw=np.int64(kw), stride=np.int64(stride), pad=np.int64(padding),
                threads=np.int64(threads))
