"""Event-driven convolution for training: the forward pass and the filter gradient of a stride-1
convolution whose input is mostly zeros (spikes), as C++ kernels through ``jax.ffi``.

A spiking layer's input is its previous layer's spikes: a minority of its values are 1 (a trained digits
network: about 18 % into its first spiking convolution, 41 % after a max pool), the rest 0. A dense
convolution multiplies every zero; these kernels visit only the nonzero inputs ("events"):

  forward          y[n, p, :] = sum over taps (i, j) and the events (c, v) of input pixel p + (i, j) - pad
                   of v * w[i, j, c, :]: per output pixel, Cout accumulators in vector registers, the
                   events of the pixels under its window read from a per-image list;
  filter gradient  dw[i, j, c, :] = sum over the events (n, q, v) of channel c of v * g[n, q - (i, j) + pad, :]
                   (output pixels outside the map skipped): per channel and tap, Cout accumulators in
                   registers over that channel's events, images taken in chunks whose output gradient
                   stays in the core's cache; each chunk's sum is added to dw in chunk order.

The input gradient is a dense convolution of the dense output gradient and stays XLA's (``conv.py``'s
``_event_conv`` builds the VJP). Work grows with the events, not with the pixels x channels: at 15 %
firing the two passes do about 15 % of the dense products (as adds of weight rows, which a vector unit
does at the rate of its dense products; ``benchmarks/event_conv.py`` measures where that wins).

Values: every product is exact for a 0/1 input (the weight itself); outputs and weight gradients are the
dense convolution's sums in another order, so they agree with XLA's f32 convolution to f32 rounding
(``tests/test_event_conv.py`` compares with a float64 reference). Any input computes correctly (a
nonzero value v multiplies its weight row); only its speed depends on the zeros. The work is split over
XLA's own CPU thread pool (``ffi::ThreadPool``: no threads of the kernels' own compete with XLA's operations
running beside them); each output element is summed by one thread in one fixed order (events by pixel then
channel; chunks in order), so results do not depend on the thread count.

Compiled on first use by ``jsnn.native`` (cached per source, compiler, flags and CPU); where it cannot be
built (no compiler) ``unavailable`` says why in one line, logged once, and ``conv.conv2d`` keeps XLA's
convolution. ``JSNN_EVENT_CONV=0`` turns it off.
"""
from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jsnn import native

SOURCE = r"""
#include <cstring>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
""" + native.XLA_PARALLEL + r"""
// 16 floats; GCC and clang lower it to one AVX-512 register, two AVX2 or four SSE registers.
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // unaligned loads and stores
static inline v16 load(const float* p) { return *(const v16u*)p; }

struct Shape {
  int64_t N, H, W, C, KH, KW, O, pad, Ho, Wo, Op;  // Op: O rounded up to 16 (weight rows' stride)
  Shape(int64_t N_, int64_t H_, int64_t W_, int64_t C_, int64_t KH_, int64_t KW_, int64_t O_, int64_t pad_)
      : N(N_), H(H_), W(W_), C(C_), KH(KH_), KW(KW_), O(O_), pad(pad_), Ho(H_ + 2 * pad_ - KH_ + 1),
        Wo(W_ + 2 * pad_ - KW_ + 1), Op((O_ + 15) / 16 * 16) {}
};

// Output channels go in blocks of NV registers (16 channels each): 8 while at least 128 remain, then 4, 2, 1.
template <typename F> static void over_blocks(int64_t Op, F f) {
  int64_t o = 0;
  for (; Op - o >= 128; o += 128) f(std::integral_constant<int, 8>(), o);
  for (; Op - o >= 64; o += 64) f(std::integral_constant<int, 4>(), o);
  for (; Op - o >= 32; o += 32) f(std::integral_constant<int, 2>(), o);
  for (; Op - o >= 16; o += 16) f(std::integral_constant<int, 1>(), o);
}

// Sets of accumulators that alternate between events, so that consecutive adds into one register do not
// wait for each other (four independent chains at least).
template <int NV> constexpr int sets() { return NV >= 4 ? 1 : 4 / NV; }
// (forward_block and filter_block each write out their own accumulation loop: as one helper holding the
// accumulators in a struct, the kernels ran slower in `benchmarks/event_conv.py --quick`, alternated with these.)

// The nonzero inputs of `pixels` pixels of C channels at x, in rows of `row` pixels: entries start[p] ..
// start[p + 1] of (index, value), the index (p % row) * C + channel (with row = W: where the event's weight
// row lies among a kernel row's KW C rows, shifted by the output pixel's column). chan and val need room for
// 16 entries past the last (a vector is stored whole, then the position advances past its nonzeros only).
static void collect(const float* x, int64_t pixels, int64_t C, int64_t row, int32_t* start, int32_t* chan,
                    float* val) {
  int32_t k = 0;
#ifdef __AVX512F__
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __mmask16 tail = __mmask16((1u << (C % 16)) - 1);
  for (int64_t p = 0; p < pixels; ++p) {
    start[p] = k;
    const float* px = x + p * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __m512 v = C - c >= 16 ? _mm512_loadu_ps(px + c) : _mm512_maskz_loadu_ps(tail, px + c);
      const __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
      const __m512i ch = _mm512_add_epi32(lanes, _mm512_set1_epi32(int32_t((p % row) * C + c)));
      _mm512_storeu_si512(chan + k, _mm512_maskz_compress_epi32(nz, ch));
      _mm512_storeu_ps(val + k, _mm512_maskz_compress_ps(nz, v));
      k += __builtin_popcount(nz);
    }
  }
#else
  for (int64_t p = 0; p < pixels; ++p) {  // every value written, the position advanced only past a nonzero
    start[p] = k;
    const float* px = x + p * C;
    for (int64_t c = 0; c < C; ++c) {
      const float v = px[c];
      chan[k] = int32_t((p % row) * C + c);
      val[k] = v;
      k += v != 0.0f;
    }
  }
#endif
  start[pixels] = k;
}

// One image's outputs at channels [o0, o0 + 16 NV) (of `width` real ones), its events in start/chan/val;
// w: the weight rows (KH KW C rows of Op floats).
template <int NV>
static void forward_block(const Shape& s, const int32_t* start, const int32_t* chan, const float* val,
                          const float* w, int64_t o0, float* y) {
  constexpr int S = sets<NV>();
  const int64_t width = std::min<int64_t>(16 * NV, s.O - o0);
  for (int64_t yo = 0; yo < s.Ho; ++yo)
    for (int64_t xo = 0; xo < s.Wo; ++xo) {
      v16 acc[S][NV];
      for (int t = 0; t < S; ++t)
        for (int q = 0; q < NV; ++q) acc[t][q] = v16{};
      // kernel row i: the events of input pixels (yo + i - pad, x0 .. x1) are one range, and an event of index
      // xi C + c meets weight row ((i KW + xi - xo + pad) C + c): the index shifted by the output column
      const int64_t x0 = std::max<int64_t>(0, xo - s.pad), x1 = std::min<int64_t>(s.W, xo - s.pad + s.KW);
      for (int64_t i = 0; i < s.KH; ++i) {
        const int64_t yi = yo + i - s.pad;
        if (yi < 0 || yi >= s.H) continue;
        const int64_t shift = i * s.KW * s.C - (xo - s.pad) * s.C;
        int64_t e = start[yi * s.W + x0];
        const int64_t end = start[yi * s.W + x1];
        for (; e + S <= end; e += S)
          for (int t = 0; t < S; ++t) {
            const float* r = w + (shift + chan[e + t]) * s.Op + o0;
            const float v = val[e + t];
            for (int q = 0; q < NV; ++q) acc[t][q] += v * load(r + 16 * q);
          }
        for (; e < end; ++e) {
          const float* r = w + (shift + chan[e]) * s.Op + o0;
          for (int q = 0; q < NV; ++q) acc[0][q] += val[e] * load(r + 16 * q);
        }
      }
      for (int t = 1; t < S; ++t)
        for (int q = 0; q < NV; ++q) acc[0][q] += acc[t][q];
      float* out = y + (yo * s.Wo + xo) * s.O + o0;
      if (width == 16 * NV) {
        for (int q = 0; q < NV; ++q) *(v16u*)(out + 16 * q) = acc[0][q];
      } else {
        alignas(64) float tmp[16 * NV];
        for (int q = 0; q < NV; ++q) *(v16*)(tmp + 16 * q) = acc[0][q];
        std::memcpy(out, tmp, width * sizeof(float));
      }
    }
}

// Weight rows padded to Op floats (zeros past O), or the kernel itself where O is a multiple of 16.
static const float* padded_rows(const float* w, const Shape& s) {
  if (s.Op == s.O) return w;
  const int64_t rows = s.KH * s.KW * s.C;
  float* wp = scratch<float>(3, rows * s.Op);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(wp + r * s.Op, w + r * s.O, s.O * sizeof(float));
    std::memset(wp + r * s.Op + s.O, 0, (s.Op - s.O) * sizeof(float));
  }
  return wp;
}

static void forward(const float* x, const float* w_in, float* y, const Shape& s, ffi::ThreadPool& pool) {
  const float* w = padded_rows(w_in, s);
  const int64_t pixels = s.H * s.W;
  in_parallel(pool, s.N, [&](int64_t a, int64_t b) {
    int32_t* start = scratch<int32_t>(0, pixels + 1);
    int32_t* chan = scratch<int32_t>(1, pixels * s.C + 16);
    float* val = scratch<float>(2, pixels * s.C + 16);
    for (int64_t n = a; n < b; ++n) {
      collect(x + n * pixels * s.C, pixels, s.C, s.W, start, chan, val);
      float* yn = y + n * s.Ho * s.Wo * s.O;
      over_blocks(s.Op, [&](auto nv, int64_t o0) {
        forward_block<decltype(nv)::value>(s, start, chan, val, w, o0, yn);
      });
    }
  });
}

// A chunk of images' events by channel: channel c's events are entries cstart[c] .. cstart[c + 1] of
// (where, value), in the order of (image, pixel); `where` is the row of the padded output gradient (below) that
// the event meets at tap (0, 0); at tap (i, j) it meets row where - (i Wp + j).
struct ChannelEvents {
  std::vector<int32_t> cstart, where;
  std::vector<float> val;
};

// The output gradient of a chunk of images with KH - 1 - pad zero rows above and below and KW - 1 - pad zero
// columns left and right (Hp x Wp pixels an image): every tap of every event reads a row, zeros where the
// output pixel is outside the map.
struct GradLayout {
  int64_t top, left, Hp, Wp;
  explicit GradLayout(const Shape& s)
      : top(s.KH - 1 - s.pad), left(s.KW - 1 - s.pad), Hp(s.Ho + 2 * top), Wp(s.Wo + 2 * left) {}
};

static void pad_grad(const float* g, const Shape& s, const GradLayout& L, int64_t images, float* gp) {
  std::memset(gp, 0, images * L.Hp * L.Wp * s.O * sizeof(float));
  for (int64_t m = 0; m < images; ++m)
    for (int64_t yo = 0; yo < s.Ho; ++yo)
      std::memcpy(gp + ((m * L.Hp + yo + L.top) * L.Wp + L.left) * s.O, g + (m * s.Ho + yo) * s.Wo * s.O,
                  s.Wo * s.O * sizeof(float));
}

static void events_by_channel(const float* x, const Shape& s, const GradLayout& L, int64_t images, ChannelEvents& ev) {
  const int64_t C = s.C, pixels = images * s.H * s.W;
  int32_t* start = scratch<int32_t>(0, pixels + 1);
  int32_t* chan = scratch<int32_t>(1, pixels * C + 16);
  float* val = scratch<float>(2, pixels * C + 16);
  collect(x, pixels, C, 1, start, chan, val);
  const int32_t events = start[pixels];
  ev.cstart.assign(C + 1, 0);
  for (int32_t e = 0; e < events; ++e) ++ev.cstart[chan[e] + 1];
  for (int64_t c = 0; c < C; ++c) ev.cstart[c + 1] += ev.cstart[c];
  ev.where.resize(events + 1);
  ev.val.resize(events + 1);
  std::vector<int32_t> next(ev.cstart.begin(), ev.cstart.end() - 1);
  // input pixel (yi, xi) meets output pixel (yi + pad - i, xi + pad - j) at tap (i, j): padded row
  // (yi + pad + top - i) Wp + (xi + pad + left - j)
  for (int64_t m = 0, p = 0; m < images; ++m)
    for (int64_t yi = 0; yi < s.H; ++yi)
      for (int64_t xi = 0; xi < s.W; ++xi, ++p) {
        const int32_t where = int32_t((m * L.Hp + yi + s.pad + L.top) * L.Wp + xi + s.pad + L.left);
        for (int32_t e = start[p]; e < start[p + 1]; ++e) {
          const int32_t slot = next[chan[e]]++;
          ev.where[slot] = where;
          ev.val[slot] = val[e];
        }
      }
}

// dw[i, j, c, o0 : o0 + 16 NV] += this chunk's sum for channel c at taps (i, j0 .. j0 + J - 1), one pass over the
// channel's events: an event meets tap (i, j0 + t) at the padded gradient's row t before the one it meets at
// (i, j0), so one address serves the J taps. gp: the chunk's padded gradient.
template <int NV, int J>
static void filter_taps(const Shape& s, const GradLayout& L, const ChannelEvents& ev, int64_t c, const float* gp,
                        int64_t o0, int64_t i, int64_t j0, float* dw) {
  const int64_t e0 = ev.cstart[c], e1 = ev.cstart[c + 1];
  const int32_t* where = ev.where.data();
  const float* val = ev.val.data();
  const int64_t width = std::min<int64_t>(16 * NV, s.O - o0), shift = i * L.Wp + j0;
  v16 acc[J][NV];
  for (int t = 0; t < J; ++t)
    for (int q = 0; q < NV; ++q) acc[t][q] = v16{};
  for (int64_t e = e0; e < e1; ++e) {
    const float* r = gp + (where[e] - shift) * s.O + o0;
    const float v = val[e];
    for (int t = 0; t < J; ++t)
      for (int q = 0; q < NV; ++q) acc[t][q] += v * load(r - t * s.O + 16 * q);
  }
  for (int t = 0; t < J; ++t) {
    alignas(64) float tmp[16 * NV];
    for (int q = 0; q < NV; ++q) *(v16*)(tmp + 16 * q) = acc[t][q];
    float* out = dw + ((i * s.KW + j0 + t) * s.C + c) * s.O + o0;
    for (int64_t o = 0; o < width; ++o) out[o] += tmp[o];
  }
}

// Every tap of channel c. Up to 64 outputs: three taps of a kernel row a pass (then two, one), sharing an event's
// address and loads among the taps; 128 outputs: one tap a pass, in this loop (3 x 8 accumulators and their loads
// do not fit the registers). Measured with benchmarks/event_conv.py's shapes, alternated with one tap a pass
// everywhere: faster on 16-32 outputs, the same on 64; on blocks of 128, filter_taps<8, 1> ran slower than this loop.
template <int NV>
static void filter_block(const Shape& s, const GradLayout& L, const ChannelEvents& ev, int64_t c, const float* gp,
                         int64_t o0, float* dw) {
  if constexpr (NV <= 4) {
    for (int64_t i = 0; i < s.KH; ++i) {
      int64_t j = 0;
      for (; j + 3 <= s.KW; j += 3) filter_taps<NV, 3>(s, L, ev, c, gp, o0, i, j, dw);
      if (s.KW - j == 2) filter_taps<NV, 2>(s, L, ev, c, gp, o0, i, j, dw);
      if (s.KW - j == 1) filter_taps<NV, 1>(s, L, ev, c, gp, o0, i, j, dw);
    }
    return;
  }
  constexpr int S = sets<NV>();
  const int64_t e0 = ev.cstart[c], e1 = ev.cstart[c + 1];
  const int32_t* where = ev.where.data();
  const float* val = ev.val.data();
  const int64_t width = std::min<int64_t>(16 * NV, s.O - o0);
  for (int64_t i = 0; i < s.KH; ++i)
    for (int64_t j = 0; j < s.KW; ++j) {
      v16 acc[S][NV];
      for (int t = 0; t < S; ++t)
        for (int q = 0; q < NV; ++q) acc[t][q] = v16{};
      const int64_t shift = i * L.Wp + j;
      int64_t e = e0;
      for (; e + S <= e1; e += S)
        for (int t = 0; t < S; ++t) {
          const float* r = gp + (where[e + t] - shift) * s.O + o0;
          const float v = val[e + t];
          for (int q = 0; q < NV; ++q) acc[t][q] += v * load(r + 16 * q);
        }
      for (; e < e1; ++e) {
        const float* r = gp + (where[e] - shift) * s.O + o0;
        for (int q = 0; q < NV; ++q) acc[0][q] += val[e] * load(r + 16 * q);
      }
      for (int t = 1; t < S; ++t)
        for (int q = 0; q < NV; ++q) acc[0][q] += acc[t][q];
      alignas(64) float tmp[16 * NV];
      for (int q = 0; q < NV; ++q) *(v16*)(tmp + 16 * q) = acc[0][q];
      float* out = dw + ((i * s.KW + j) * s.C + c) * s.O + o0;
      for (int64_t o = 0; o < width; ++o) out[o] += tmp[o];
    }
}

static void filter_grad(const float* x, const float* g, float* dw, const Shape& s, ffi::ThreadPool& pool) {
  const GradLayout L(s);
  // Images a chunk: its padded output gradient about 256 KiB (a core's cache keeps it while every channel reads it).
  const int64_t image_floats = L.Hp * L.Wp * s.O;
  const int64_t per_chunk = std::max<int64_t>(1, std::min<int64_t>(1024, (256 << 10) / (4 * image_floats)));
  const int64_t chunks = (s.N + per_chunk - 1) / per_chunk;
  std::vector<ChannelEvents> events(chunks);
  // rows past the last image's: a vector load at a row's last output block reads up to Op - O floats beyond it
  float* gp = scratch<float>(4, s.N * image_floats + 16);
  in_parallel(pool, chunks, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) {
      const int64_t first = k * per_chunk, images = std::min(per_chunk, s.N - first);
      events_by_channel(x + first * s.H * s.W * s.C, s, L, images, events[k]);
      pad_grad(g + first * s.Ho * s.Wo * s.O, s, L, images, gp + first * image_floats);
    }
  });
  std::memset(dw, 0, s.KH * s.KW * s.C * s.O * sizeof(float));
  // channels in ranges over the threads; each range walks every chunk (chunk outermost: its gradient stays cached)
  in_parallel(pool, s.C, [&](int64_t a, int64_t b) {
    for (int64_t k = 0; k < chunks; ++k) {
      const float* gk = gp + k * per_chunk * image_floats;
      for (int64_t c = a; c < b; ++c)
        over_blocks(s.Op, [&](auto nv, int64_t o0) {
          filter_block<decltype(nv)::value>(s, L, events[k], c, gk, o0, dw);
        });
    }
  }, (s.C + pool.num_threads() - 1) / std::max<int64_t>(1, pool.num_threads()));
}

static ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> y, int64_t pad) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || xd[3] != wd[2])
    return ffi::Error::InvalidArgument("expected NHWC input and an HWIO kernel of its channels");
  forward(x.typed_data(), w.typed_data(), y->typed_data(), Shape(xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], pad),
          pool);
  return ffi::Error::Success();
}

static ffi::Error FilterGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                             ffi::ResultBuffer<ffi::F32> dw, int64_t pad) {
  auto xd = x.dimensions(), dd = dw->dimensions();
  if (xd.size() != 4 || dd.size() != 4 || xd[3] != dd[2])
    return ffi::Error::InvalidArgument("expected NHWC input and an HWIO kernel of its channels");
  filter_grad(x.typed_data(), g.typed_data(), dw->typed_data(),
              Shape(xd[0], xd[1], xd[2], xd[3], dd[0], dd[1], dd[3], pad), pool);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnEventConvForward, Forward,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnEventConvFilterGrad, FilterGrad,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("pad"));
"""

WHAT = "the event-driven training convolution"
TARGETS = {"forward": "jsnn_event_conv_forward", "filter_grad": "jsnn_event_conv_filter_grad"}
_SYMBOLS = {"forward": "JsnnEventConvForward", "filter_grad": "JsnnEventConvFilterGrad"}
# Densities (nonzero fraction of the input) up to which each kernel beats XLA's f32 convolution on the layer
# shapes benchmarks/event_conv.py measures (Bernoulli inputs); above them conv.py runs XLA's instead, decided
# per call from the input's nonzeros.
FORWARD_MAX_DENSITY = 0.5
FILTER_GRAD_MAX_DENSITY = 0.4
# Under the "bf16" precision the dense alternative is jsnn's bf16 kernel (conv_kernel: AMX or AVX512-BF16), about
# twice XLA's f32 rate: the forward kernel wins on every measured layer at 15 % and on most up to about 25-30 %
# (not on MNIST's 16 -> 32 layer above 5 %), and its backward call stays the bf16 kernel's (the split into its
# input gradient and the event-driven filter gradient won only at 5-15 %): benchmarks/event_conv.py's bf16 rows.
BF16_FORWARD_MAX_DENSITY = 0.25


def build(cache_dir: str | None = None) -> str:
    """Compiles the kernels (once per source, flags, compiler and CPU) and returns the shared library's path."""
    return native.build("event_conv", SOURCE, native.FLAGS, cache_dir or native.cache_dir("event_conv"), WHAT)


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
    """Builds and registers the kernels once per process; None where they can run, else why not (one line,
    logged once: the convolutions then run as XLA's, correct and slower)."""
    if os.environ.get("JSNN_EVENT_CONV", "1") == "0":
        return "JSNN_EVENT_CONV=0"
    try:
        native.register(build(), {target: _SYMBOLS[key] for key, target in TARGETS.items()})
    except (native.CompilerMissing, RuntimeError, OSError) as e:
        why = str(e).splitlines()[0]
        logging.getLogger(__name__).warning("spike-input convolutions run as XLA's, not event-driven: %s", why)
        return why
    return None


def unavailable() -> str | None:
    """Why the kernels cannot run in this process (one line), or None where they can."""
    return _load()


def supports(x_shape, kernel_shape, stride: int, padding: int) -> bool:
    """Whether the kernels compute this convolution (NHWC ``x_shape``, HWIO ``kernel_shape``)."""
    kh, kw, _, _ = kernel_shape
    _, h, w, c = x_shape
    return (stride == 1 and 0 <= padding < min(kh, kw) and h * w * c < 2 ** 31  # one image's events: int32
            and h + 2 * padding >= kh and w + 2 * padding >= kw)


def _call(target: str, shape, *args, padding: int):
    result = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(TARGETS[target], result, vmap_method="sequential")(*args, pad=np.int64(padding))


def forward(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Stride-1 convolution of f32 NHWC ``x`` with the f32 HWIO ``kernel``, ``padding`` zeros on every side,
    over ``x``'s nonzeros. Call only where ``supports`` and not ``unavailable()``."""
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    return _call("forward", (n, h + 2 * padding - kh + 1, w + 2 * padding - kw + 1, cout), x, kernel, padding=padding)


def filter_grad(x: jax.Array, g: jax.Array, kernel_shape, padding: int) -> jax.Array:
    """The gradient of ``forward(x, kernel, padding)`` with respect to the kernel, for the output gradient
    ``g`` (f32), over ``x``'s nonzeros."""
    return _call("filter_grad", tuple(kernel_shape), x, g, padding=padding)
