"""bf16 convolutions on the CPU's matrix unit (Intel AMX), or its AVX512-BF16 dot products, as C++ kernels
through ``jax.ffi``.

XLA's CPU convolutions do not reach AMX: in bf16 they run at about the f32 rate, while a bf16 matmul
runs several times faster (docs/speed.md, "Precision"). The same holds on a CPU without AMX whose vector
units multiply bf16 pairs (``VDPBF16PS``, e.g. AMD Zen 4), at about twice the f32 rate there. An im2col
matmul would reach either, but XLA builds the patches slowly, and the filter gradient's product over the
long pixel axis is slow unless its operand is laid out transposed. These kernels compute a stride-1
convolution straight from the padded input with AMX tiles (``TDPBF16PS``: bf16 products, f32
accumulation), never building patches:

  forward          out[q] = sum over taps t, channels c of xpad[q + off_t, c] * w[t, c, o]
                   over the padded images' flattened pixels q (a tap's input is the output pixel's
                   index shifted by ``i*R + j``, R the stored row length; images and rows share their
                   zero borders, and the flat indices that are no output pixel are computed and
                   dropped: ``Layout`` in the source);
  input gradient   the same kernel on the output gradient, with the spatially flipped, channel-
                   transposed kernel and padding ``k - 1 - padding`` (one call computes both gradients);
  filter gradient  dw[t, c, o] = sum over q of xpad[q + off_t, c] * g[q, o], over pixel chunks that
                   stay in cache, with the input transposed to [C, q] and the gradient packed in
                   pixel pairs (the layouts the tile product reads).

The AVX512-BF16 build (``cpu_variant``, compiled with ``JSNN_DPBF16``) keeps these layouts and loops and
makes each tile product from vector registers (``dp``: 8 rows x 32 outputs of accumulators); its
forward pass reads each output pixel's input rows at their own addresses, so it computes only the output
pixels, not the flat indices the tiles' fixed stride would drop.

Operands are bf16 (``conv.conv2d`` casts them under the "bf16" precision), results f32. Every
output element is a sum of exact bf16 x bf16 products accumulated in f32 in a fixed order (by
tap, then by 32 channels, or by pixel chunk for the filter gradient), independent of the thread
count. Values agree with XLA's bf16 convolution to f32 rounding (``tests/test_conv_kernel.py``
compares with a float64 reference on the same bf16 operands).

Channels are padded with zeros to multiples of 32 inside the kernel (the tiles' width), so any count
computes; ``supports`` takes the shapes where that at most doubles the products
(``MAX_PADDED_PRODUCTS``). Where: the "bf16" precision on the CPU backend, on a CPU with AMX-BF16 and a
Linux kernel that grants it, or with AVX512-BF16 (``unavailable``), stride 1, ``padding < kernel size``;
``conv.conv2d`` decides (``_amx_applies``) and otherwise keeps XLA's convolution. ``JSNN_CONV_AMX=0`` turns
either build off.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jsnn import native

SOURCE = r"""
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using bf16 = uint16_t;
""" + native.XLA_PARALLEL + r"""

#ifdef JSNN_DPBF16
// The AVX512-BF16 build (a CPU without AMX): the same loops, their products made by VDPBF16PS on
// vector registers instead of tiles (dp below); no state to ask the kernel for.
static bool amx_granted() { return true; }
#define TILE_CONFIG()
#define TILE_RELEASE()

// acc[m][h] (16 f32 outputs each) += sum over `pairs` pairs kk of the bf16 pair at pair(m, kk) (broadcast)
// times the 16 (output, pair) values at b_h + kk * ldb: the rows of a 16 x 32 AMX tile product, M of them at a
// time. Each VDPBF16PS adds two exact bf16 x bf16 products to f32. With W = 1 only the first 16 outputs (the
// last block of an output count that is no multiple of 32). `pair` says where the rows lie: a fixed stride
// (the tiles' layout), each row at its own address (output pixels read straight from the padded input), or
// the pairs' addresses from a table (the filter gradient's pixel pairs, which jump from one row to the next).
template <int M, int W = 2, typename Pair>
static inline void dp(__m512 (&acc)[M][2], Pair pair, const bf16* b0, const bf16* b1, int64_t ldb, int64_t pairs) {
  for (int64_t kk = 0; kk < pairs; ++kk) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(b0 + kk * ldb);
    const __m512bh w1 = W == 2 ? (__m512bh)_mm512_loadu_si512(b1 + kk * ldb) : w0;
    for (int m = 0; m < M; ++m) {
      int32_t v;
      std::memcpy(&v, pair(m, kk), 4);
      const __m512bh x = (__m512bh)_mm512_set1_epi32(v);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], x, w0);
      if (W == 2) acc[m][1] = _mm512_dpbf16_ps(acc[m][1], x, w1);
    }
  }
}
constexpr int DP_ROWS = 8;  // 8 rows x 2 registers of accumulators, two of weights: 18 of the 32 registers
constexpr int DP_PIXELS = 8;  // output pixels a block of the forward pass
#else
// Asks Linux for the AMX tile state (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), once per process.
static bool amx_granted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}
#endif

extern "C" int jsnn_amx_ready() { return amx_granted() ? 1 : 0; }

#ifndef JSNN_DPBF16
struct TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {0};
  uint16_t colsb[16] = {0};
  uint8_t rows[16] = {0};
};

// Eight tiles of 16 rows x 64 bytes: four f32 accumulators (2 x 2 blocks of 16 x 16), two bf16 A
// tiles (16 rows x 32 values), two bf16 B tiles (16 pairs of rows x 16 columns).
static void load_tile_config() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
  _tile_loadconfig(&cfg);
}
#define TILE_CONFIG() load_tile_config()
#define TILE_RELEASE() _tile_release()
#endif

// Where each pixel sits in the flat buffers the tiles read. Every image is stored as Hs rows of R
// pixels: `pad` zero rows and columns before its data, and as many after as the taps reach past it
// (max(pad, k - 1 - pad)); the zeros after one row (image) are those before the next, since a tap's
// reach past the end of a row lands in the next row's first columns. Output pixel (n, h, w) is flat
// index q = n * Hs * R + h * R + w, and its tap (i, j) reads the input stored at q + i * R + j. Flat
// indices whose h >= Ho or w >= Wo are no output: computed and dropped (forward), zero (filter gradient).
struct Layout {
  int64_t N, H, W, pad, kh, kw, Ho, Wo, R, Hs, Q;
  Layout(int64_t N_, int64_t H_, int64_t W_, int64_t pad_, int64_t kh_, int64_t kw_)
      : N(N_), H(H_), W(W_), pad(pad_), kh(kh_), kw(kw_), Ho(H_ + 2 * pad_ - kh_ + 1), Wo(W_ + 2 * pad_ - kw_ + 1),
        R(W_ + std::max(pad_, kw_ - 1 - pad_)), Hs(H_ + std::max(pad_, kh_ - 1 - pad_)), Q(N_ * Hs * R) {}
  int64_t offset(int64_t t) const { return (t / kw) * R + t % kw; }
  // out[i] = the output pixel at flat index q0 + i (or -1), for i < count: one division, then steps
  void outputs(int64_t q0, int64_t count, int64_t* out) const {
    int64_t n = q0 / (Hs * R), h = (q0 / R) % Hs, w = q0 % R;
    for (int64_t i = 0; i < count; ++i) {
      out[i] = (q0 + i < Q && h < Ho && w < Wo) ? (n * Ho + h) * Wo + w : -1;
      if (++w == R) { w = 0; if (++h == Hs) { h = 0; ++n; } }
    }
  }
};

// x [N, H, W, C] -> xp [Q + tail, Cp] in the layout above (Cp >= C channels a pixel), zeros everywhere but
// the data.
static void pad_input(const bf16* x, const Layout& L, int64_t C, int64_t Cp, bf16* xp, int64_t tail,
                      ffi::ThreadPool& pool) {
  const int64_t image = L.Hs * L.R * Cp, row = L.R * Cp;
  in_parallel(pool, L.N, [&](int64_t a, int64_t b) {
    for (int64_t n = a; n < b; ++n) {
      bf16* img = xp + n * image;
      std::memset(img, 0, L.pad * row * 2);
      for (int64_t h = 0; h < L.H; ++h) {
        bf16* r = img + (h + L.pad) * row;
        const bf16* src = x + (n * L.H + h) * L.W * C;
        std::memset(r, 0, L.pad * Cp * 2);
        if (C == Cp) {
          std::memcpy(r + L.pad * Cp, src, L.W * C * 2);
        } else {
          for (int64_t w = 0; w < L.W; ++w) {
            std::memcpy(r + (L.pad + w) * Cp, src + w * C, C * 2);
            std::memset(r + (L.pad + w) * Cp + C, 0, (Cp - C) * 2);
          }
        }
        std::memset(r + (L.pad + L.W) * Cp, 0, (L.R - L.W - L.pad) * Cp * 2);
      }
      std::memset(img + (L.H + L.pad) * row, 0, (L.Hs - L.H - L.pad) * row * 2);
    }
  });
  std::memset(xp + L.Q * Cp, 0, tail * Cp * 2);
}

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// out [N, Ho, Wo, O] f32 = conv(x [N, H, W, C], w), stride 1. w is HWIO [kh, kw, C, O]; with `flip`,
// w is the HWIO kernel of the convolution whose input gradient this is ([kh, kw, O, C]) and is read
// flipped and transposed: w'[i, j, c, o] = w[kh-1-i, kw-1-j, o, c].
static void forward(const bf16* x, int64_t N, int64_t H, int64_t W, int64_t C, const bf16* w, int64_t kh,
                    int64_t kw, int64_t O, int64_t pad, bool flip, float* out, ffi::ThreadPool& pool) {
  const Layout L(N, H, W, pad, kh, kw);
  const int64_t Cp = round_up(C, 32), Op = round_up(O, 32);  // channels padded with zeros to whole tiles
  const int64_t T = kh * kw, KC = Cp / 32, OB = Op / 16, blocks = (L.Q + 31) / 32;
  const int64_t tail = blocks * 32 - L.Q + L.offset(T - 1) + 1;
  bf16* xp = scratch<bf16>(0, (L.Q + tail) * Cp);
  pad_input(x, L, C, Cp, xp, tail, pool);
  bf16* wv = scratch<bf16>(1, T * Cp * Op);  // [t][32 channels][16 outputs]: 16 rows of (output, channel pair)
  in_parallel(pool, T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const int64_t tf = (kh - 1 - t / kw) * kw + (kw - 1 - t % kw);
      for (int64_t c = 0; c < Cp; ++c)
        for (int64_t o = 0; o < Op; ++o) {
          const bf16 v = (c >= C || o >= O) ? bf16{0} : flip ? w[(tf * O + o) * C + c] : w[(t * C + c) * O + o];
          wv[((t * KC + c / 32) * OB + o / 16) * 512 + ((c % 32) / 2) * 32 + (o % 16) * 2 + c % 2] = v;
        }
    }
  });
#ifdef JSNN_DPBF16
  // Vector registers need no fixed stride between rows: each output pixel reads its own input rows, so
  // only the N * Ho * Wo output pixels are computed (the flat layout's dropped indices are not).
  const int64_t P = N * L.Ho * L.Wo;
  in_parallel(pool, (P + DP_PIXELS - 1) / DP_PIXELS, [&](int64_t a, int64_t b) {
    for (int64_t blk = a; blk < b; ++blk) {
      const int64_t p0 = blk * DP_PIXELS, count = std::min<int64_t>(DP_PIXELS, P - p0);
      int64_t q[DP_PIXELS];  // each output pixel's flat index (the last one repeated past the end)
      for (int64_t m = 0; m < DP_PIXELS; ++m) {
        const int64_t p = p0 + std::min(m, count - 1), n = p / (L.Ho * L.Wo), h = (p / L.Wo) % L.Ho;
        q[m] = n * L.Hs * L.R + h * L.R + p % L.Wo;
      }
      for (int64_t ob = 0; ob < OB; ob += 2) {
        __m512 c[DP_PIXELS][2];
        for (auto& row : c) row[0] = row[1] = _mm512_setzero_ps();
        for (int64_t t = 0; t < T; ++t) {
          const bf16* wt = wv + (t * KC * OB + ob) * 512;
          for (int64_t kc = 0; kc < KC; ++kc) {
            const bf16* rows[DP_PIXELS];
            for (int64_t m = 0; m < DP_PIXELS; ++m) rows[m] = xp + (q[m] + L.offset(t)) * Cp + kc * 32;
            // the channel pairs that hold an input channel: the zeros padding C to 32 are not multiplied
            const int64_t pairs = std::min<int64_t>(16, (C - kc * 32 + 1) / 2);
            const auto at = [&](int m, int64_t kk) { return rows[m] + 2 * kk; };
            if (O - ob * 16 > 16)
              dp(c, at, wt + kc * OB * 512, wt + kc * OB * 512 + 512, 32, pairs);
            else  // outputs past O: not computed
              dp<DP_PIXELS, 1>(c, at, wt + kc * OB * 512, nullptr, 32, pairs);
          }
        }
        const int64_t first = std::min<int64_t>(16, O - ob * 16), second = std::min<int64_t>(16, O - ob * 16 - 16);
        const __mmask16 m0 = first >= 16 ? 0xFFFF : (__mmask16(1) << first) - 1;
        const __mmask16 m1 = second >= 16 ? 0xFFFF : second <= 0 ? 0 : (__mmask16(1) << second) - 1;
        for (int64_t m = 0; m < count; ++m) {
          float* dst = out + (p0 + m) * O + ob * 16;
          _mm512_mask_storeu_ps(dst, m0, c[m][0]);
          if (m1) _mm512_mask_storeu_ps(dst + 16, m1, c[m][1]);
        }
      }
    }
  });
#else
  in_parallel(pool, blocks, [&](int64_t a, int64_t b) {
    TILE_CONFIG();
    alignas(64) float acc[4][256];
    int64_t pixel[32];
    for (int64_t blk = a; blk < b; ++blk) {
      const int64_t q0 = blk * 32;
      L.outputs(q0, 32, pixel);
      for (int64_t ob = 0; ob < OB; ob += 2) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t t = 0; t < T; ++t) {
          const bf16* rows = xp + (q0 + L.offset(t)) * Cp;
          const bf16* wt = wv + (t * KC * OB + ob) * 512;
          for (int64_t kc = 0; kc < KC; ++kc) {
            _tile_loadd(4, rows + kc * 32, Cp * 2);
            _tile_loadd(5, rows + 16 * Cp + kc * 32, Cp * 2);
            _tile_loadd(6, wt + kc * OB * 512, 64);
            _tile_loadd(7, wt + kc * OB * 512 + 512, 64);
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
          }
        }
        _tile_stored(0, acc[0], 64); _tile_stored(1, acc[1], 64);
        _tile_stored(2, acc[2], 64); _tile_stored(3, acc[3], 64);
        const int64_t first = std::min<int64_t>(16, O - ob * 16), second = std::min<int64_t>(16, O - ob * 16 - 16);
        for (int64_t r = 0; r < 32; ++r) {
          const int64_t p = pixel[r];
          if (p < 0) continue;
          float* dst = out + p * O + ob * 16;
          std::memcpy(dst, acc[(r / 16) * 2] + (r % 16) * 16, first * 4);
          if (second > 0) std::memcpy(dst + 16, acc[(r / 16) * 2 + 1] + (r % 16) * 16, second * 4);
        }
      }
    }
    TILE_RELEASE();
  });
#endif
}

// dst (32 rows, stride dst_stride) = the transpose of src (32 rows of 32 values, stride src_stride):
// five butterfly stages, each swapping the off-diagonal s x s blocks of every 2s x 2s block.
static inline void transpose32(const bf16* src, int64_t src_stride, bf16* dst, int64_t dst_stride) {
  static const struct Indices {
    __m512i a[5], b[5];
    Indices() {
      for (int k = 0; k < 5; ++k) {
        alignas(64) int16_t ia[32], ib[32];
        const int s = 1 << k;
        for (int j = 0; j < 32; ++j) {
          ia[j] = int16_t((j & s) ? 32 + j - s : j);
          ib[j] = int16_t((j & s) ? 32 + j : j + s);
        }
        a[k] = _mm512_load_si512(ia);
        b[k] = _mm512_load_si512(ib);
      }
    }
  } idx;
  __m512i r[32];
  for (int i = 0; i < 32; ++i) r[i] = _mm512_loadu_si512(src + i * src_stride);
  for (int k = 0; k < 5; ++k) {
    const int s = 1 << k;
    for (int i = 0; i < 32; ++i) {
      if (i & s) continue;
      const __m512i a = r[i], b = r[i + s];
      r[i] = _mm512_permutex2var_epi16(a, idx.a[k], b);
      r[i + s] = _mm512_permutex2var_epi16(a, idx.b[k], b);
    }
  }
  for (int i = 0; i < 32; ++i) _mm512_storeu_si512(dst + i * dst_stride, r[i]);
}

#ifdef JSNN_DPBF16
// dw as filter_grad below computes it, for output rows of even width (the AVX512-BF16 build): the sum runs
// over the output pixels' pairs (2j, 2j + 1) only, which lie side by side in a row of the padded input, so no
// flat index that is no output pixel is multiplied (the tiles' fixed stride needs them). The input is
// transposed whole to xt [Cp][LX]; the gradient is g itself in pixel pairs.
static void filter_grad_pairs(const bf16* x, const Layout& L, int64_t C, const bf16* g, int64_t O, float* dw,
                              ffi::ThreadPool& pool) {
  const int64_t T = L.kh * L.kw, pairs = L.N * L.Ho * L.Wo / 2;
  const int64_t Cp = round_up(C, 32), Op = round_up(O, 32), CB = Cp / 32, OB = Op / 32;
  const int64_t Qx = round_up(L.Q + L.offset(T - 1) + 2, 32), LX = Qx + 32;  // LX: no large power of two
  bf16* xp = scratch<bf16>(0, Qx * Cp);
  pad_input(x, L, C, Cp, xp, Qx - L.Q, pool);
  bf16* xt = scratch<bf16>(1, Cp * LX);
  in_parallel(pool, Qx / 32, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i)
      for (int64_t c0 = 0; c0 < Cp; c0 += 32) transpose32(xp + i * 32 * Cp + c0, Cp, xt + c0 * LX + i * 32, LX);
  });
  std::vector<int64_t> qoff(pairs);  // pair j's first pixel's flat index
  for (int64_t j = 0; j < pairs; ++j) {
    const int64_t p = 2 * j, n = p / (L.Ho * L.Wo), h = (p / L.Wo) % L.Ho;
    qoff[j] = n * L.Hs * L.R + h * L.R + p % L.Wo;
  }
  bf16* gv = scratch<bf16>(2, pairs * Op * 2);  // [pair][Op][2]
  in_parallel(pool, pairs, [&](int64_t a, int64_t b) {
    alignas(64) int16_t lo[32], hi[32];
    for (int j = 0; j < 16; ++j) { lo[2 * j] = j; lo[2 * j + 1] = 32 + j; hi[2 * j] = 16 + j; hi[2 * j + 1] = 48 + j; }
    const __m512i ilo = _mm512_load_si512(lo), ihi = _mm512_load_si512(hi);
    for (int64_t pair = a; pair < b; ++pair) {
      bf16* dst = gv + pair * Op * 2;
      for (int64_t o = 0; o < Op; o += 32) {
        const __mmask32 m = O - o >= 32 ? ~__mmask32{0} : (__mmask32{1} << (O - o)) - 1;  // outputs past O: 0
        const __m512i e = _mm512_maskz_loadu_epi16(m, g + 2 * pair * O + o);
        const __m512i f = _mm512_maskz_loadu_epi16(m, g + (2 * pair + 1) * O + o);
        _mm512_storeu_si512(dst + 2 * o, _mm512_permutex2var_epi16(e, ilo, f));
        _mm512_storeu_si512(dst + 2 * o + 32, _mm512_permutex2var_epi16(e, ihi, f));
      }
    }
  });
  float* acc = C == Cp && O == Op ? dw : scratch<float>(0, T * Cp * Op);  // [kh, kw, Cp, Op]
  std::fill(acc, acc + T * Cp * Op, 0.0f);
  constexpr int64_t JB = 512;  // pixel pairs a chunk: its slices of xt and gv stay in L2 for every work item
  in_parallel(pool, T * CB * OB, [&](int64_t a, int64_t b) {
    for (int64_t j1 = 0; j1 < pairs; j1 += JB) {
      const int64_t count = std::min(pairs, j1 + JB) - j1;
      for (int64_t item = a; item < b; ++item) {
        const int64_t t = item / (CB * OB), cb = (item / OB) % CB, ob = item % OB;
        float* d = acc + (t * Cp + cb * 32) * Op + ob * 32;
        for (int64_t r0 = 0; r0 < 32 && cb * 32 + r0 < C; r0 += DP_ROWS) {  // rows past C: no input channel
          __m512 c[DP_ROWS][2];
          for (int64_t m = 0; m < DP_ROWS; ++m) {
            c[m][0] = _mm512_loadu_ps(d + (r0 + m) * Op);
            c[m][1] = _mm512_loadu_ps(d + (r0 + m) * Op + 16);
          }
          const bf16* a0 = xt + (cb * 32 + r0) * LX + L.offset(t);
          const int64_t* q = qoff.data() + j1;
          const bf16* b0 = gv + j1 * Op * 2 + ob * 64;
          dp(c, [&](int m, int64_t kk) { return a0 + q[kk] + m * LX; }, b0, b0 + 32, Op * 2, count);
          for (int64_t m = 0; m < DP_ROWS; ++m) {
            _mm512_storeu_ps(d + (r0 + m) * Op, c[m][0]);
            _mm512_storeu_ps(d + (r0 + m) * Op + 16, c[m][1]);
          }
        }
      }
    }
  });
  if (acc != dw)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) std::memcpy(dw + (t * C + c) * O, acc + (t * Cp + c) * Op, O * 4);
}
#endif

// dw [kh, kw, C, O] f32 = sum over output pixels of the tap's input window^T g: x [N, H, W, C],
// g [N, Ho, Wo, O], stride 1.
static void filter_grad(const bf16* x, int64_t N, int64_t H, int64_t W, int64_t C, const bf16* g, int64_t kh,
                        int64_t kw, int64_t O, int64_t pad, float* dw, ffi::ThreadPool& pool) {
  const Layout L(N, H, W, pad, kh, kw);
#ifdef JSNN_DPBF16
  if (L.Wo % 2 == 0) return filter_grad_pairs(x, L, C, g, O, dw, pool);
#endif
  // Pixels a chunk: a chunk's slice of xt and gv stays in L2 while every work item reads it. xt holds
  // each chunk as its own [C][QB + halo] block (the halo: the pixels the taps reach past the chunk),
  // so a tile's 16 channel rows lie 2 (QB + halo) bytes apart, not a whole image's pixels apart
  // (strides of large powers of two would map every row to the same cache sets).
  constexpr int64_t QB = 1024;
  const int64_t T = kh * kw, Q = (L.Q + 31) / 32 * 32, chunks = (Q + QB - 1) / QB;
  const int64_t halo = (L.offset(T - 1) + 32) / 32 * 32, RL = QB + halo, Qx = chunks * QB + halo;
  const int64_t Cp = round_up(C, 32), Op = round_up(O, 32);  // channels padded with zeros to whole tiles
  bf16* xp = scratch<bf16>(0, Qx * Cp);
  pad_input(x, L, C, Cp, xp, Qx - L.Q, pool);
  bf16* xt = scratch<bf16>(1, chunks * Cp * RL);  // [chunk][Cp][RL]: tile rows are channels, their 32 values pixels
  in_parallel(pool, chunks * (RL / 32), [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) {
      const int64_t k = i / (RL / 32), j = (i % (RL / 32)) * 32;
      for (int64_t c0 = 0; c0 < Cp; c0 += 32)
        transpose32(xp + (k * QB + j) * Cp + c0, Cp, xt + (k * Cp + c0) * RL + j, RL);
    }
  });
  bf16* gv = scratch<bf16>(2, Q * Op);  // [q/2][Op][2]: pixel pairs, zero where a pixel is no output
  in_parallel(pool, Q / 2, [&](int64_t a, int64_t b) {
    alignas(64) int16_t lo[32], hi[32];
    for (int j = 0; j < 16; ++j) { lo[2 * j] = j; lo[2 * j + 1] = 32 + j; hi[2 * j] = 16 + j; hi[2 * j + 1] = 48 + j; }
    const __m512i ilo = _mm512_load_si512(lo), ihi = _mm512_load_si512(hi), zero = _mm512_setzero_si512();
    std::vector<int64_t> pixel(2 * (b - a));
    L.outputs(2 * a, 2 * (b - a), pixel.data());
    for (int64_t pair = a; pair < b; ++pair) {
      const int64_t p0 = pixel[2 * (pair - a)], p1 = pixel[2 * (pair - a) + 1];
      bf16* dst = gv + pair * Op * 2;
      for (int64_t o = 0; o < Op; o += 32) {
        const __mmask32 m = O - o >= 32 ? ~__mmask32{0} : (__mmask32{1} << (O - o)) - 1;  // outputs past O: 0
        const __m512i e = p0 < 0 ? zero : _mm512_maskz_loadu_epi16(m, g + p0 * O + o);
        const __m512i f = p1 < 0 ? zero : _mm512_maskz_loadu_epi16(m, g + p1 * O + o);
        _mm512_storeu_si512(dst + 2 * o, _mm512_permutex2var_epi16(e, ilo, f));
        _mm512_storeu_si512(dst + 2 * o + 32, _mm512_permutex2var_epi16(e, ihi, f));
      }
    }
  });
  const int64_t CB = Cp / 32, OB = Op / 32;
  float* acc = C == Cp && O == Op ? dw : scratch<float>(0, T * Cp * Op);  // [kh, kw, Cp, Op]
  std::fill(acc, acc + T * Cp * Op, 0.0f);
  in_parallel(pool, T * CB * OB, [&](int64_t a, int64_t b) {
    TILE_CONFIG();
    for (int64_t q1 = 0; q1 < Q; q1 += QB) {
      const int64_t q2 = std::min(Q, q1 + QB);
      for (int64_t item = a; item < b; ++item) {
        const int64_t t = item / (CB * OB), cb = (item / OB) % CB, ob = item % OB;
        float* d = acc + (t * Cp + cb * 32) * Op + ob * 32;
#ifdef JSNN_DPBF16
        for (int64_t r0 = 0; r0 < 32 && cb * 32 + r0 < C; r0 += DP_ROWS) {  // DP_ROWS channels x 32 outputs
          __m512 c[DP_ROWS][2];
          for (int64_t m = 0; m < DP_ROWS; ++m) {
            c[m][0] = _mm512_loadu_ps(d + (r0 + m) * Op);
            c[m][1] = _mm512_loadu_ps(d + (r0 + m) * Op + 16);
          }
          for (int64_t q = q1; q < q2; q += 32) {
            const bf16* a0 = xt + ((q1 / QB) * Cp + cb * 32 + r0) * RL + (q - q1) + L.offset(t);
            const bf16* b0 = gv + (q / 2) * Op * 2 + ob * 64;
            dp(c, [&](int m, int64_t kk) { return a0 + m * RL + 2 * kk; }, b0, b0 + 32, Op * 2, 16);
          }
          for (int64_t m = 0; m < DP_ROWS; ++m) {
            _mm512_storeu_ps(d + (r0 + m) * Op, c[m][0]);
            _mm512_storeu_ps(d + (r0 + m) * Op + 16, c[m][1]);
          }
        }
#else
        _tile_loadd(0, d, Op * 4); _tile_loadd(1, d + 16, Op * 4);
        _tile_loadd(2, d + 16 * Op, Op * 4); _tile_loadd(3, d + 16 * Op + 16, Op * 4);
        for (int64_t q = q1; q < q2; q += 32) {
          const bf16* a0 = xt + ((q1 / QB) * Cp + cb * 32) * RL + (q - q1) + L.offset(t);
          _tile_loadd(4, a0, RL * 2);
          _tile_loadd(5, a0 + 16 * RL, RL * 2);
          const bf16* b0 = gv + (q / 2) * Op * 2 + ob * 64;
          _tile_loadd(6, b0, Op * 4);
          _tile_loadd(7, b0 + 32, Op * 4);
          _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, d, Op * 4); _tile_stored(1, d + 16, Op * 4);
        _tile_stored(2, d + 16 * Op, Op * 4); _tile_stored(3, d + 16 * Op + 16, Op * 4);
#endif
      }
    }
    TILE_RELEASE();
  });
  if (acc != dw)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) std::memcpy(dw + (t * C + c) * O, acc + (t * Cp + c) * Op, O * 4);
}

static ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> w,
                          ffi::ResultBuffer<ffi::F32> out, int64_t pad, int64_t flip) {
  if (!amx_granted()) return ffi::Error::Internal("jsnn's AMX convolution: the kernel did not grant AMX");
  auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  forward(x.typed_data(), xd[0], xd[1], xd[2], xd[3], w.typed_data(), wd[0], wd[1], od[3], pad, flip != 0,
          out->typed_data(), pool);
  return ffi::Error::Success();
}

// Both gradients in one call, one after the other, each split over XLA's whole pool.
static ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> w,
                           ffi::Buffer<ffi::BF16> g, ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dw,
                           int64_t pad) {
  if (!amx_granted()) return ffi::Error::Internal("jsnn's AMX convolution: the kernel did not grant AMX");
  auto xd = x.dimensions(), wd = w.dimensions(), gd = g.dimensions();
  forward(g.typed_data(), gd[0], gd[1], gd[2], gd[3], w.typed_data(), wd[0], wd[1], xd[3], wd[0] - 1 - pad, true,
          dx->typed_data(), pool);
  filter_grad(x.typed_data(), xd[0], xd[1], xd[2], xd[3], g.typed_data(), wd[0], wd[1], wd[3], pad,
              dw->typed_data(), pool);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnAmxConvForward, Forward,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("pad")
                                  .Attr<int64_t>("flip"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JsnnAmxConvBackward, Backward,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>().Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("pad"));
"""

# The kernels' two builds: AMX tiles, or AVX512-BF16's VDPBF16PS on vector registers (the same loops and
# layouts, for a CPU with bf16 dot products and no AMX, e.g. AMD Zen 4)
FLAGS = {"amx": (*native.FLAGS, "-mamx-tile", "-mamx-bf16", "-mavx512bf16"),
         "avx512_bf16": (*native.FLAGS, "-mavx512bf16", "-DJSNN_DPBF16")}
WHAT = "the bf16 convolution kernel"
TARGETS = {"forward": "jsnn_amx_conv_forward", "backward": "jsnn_amx_conv_backward"}
_SYMBOLS = {"forward": "JsnnAmxConvForward", "backward": "JsnnAmxConvBackward"}
CHANNEL_MULTIPLE = 32  # a tile row holds 32 bf16 input channels; outputs go in pairs of 16-column tiles
# Channels are padded with zeros to CHANNEL_MULTIPLE inside the kernel; a convolution whose padded
# products exceed its own by more than this factor stays with XLA (e.g. an encoding layer's 1 to 3 inputs).
MAX_PADDED_PRODUCTS = 2.0


def cpu_has_amx() -> bool:
    """Whether this CPU reports AMX tiles with bf16 products (/proc/cpuinfo)."""
    features = native.cpu_features().split()
    return "amx_tile" in features and "amx_bf16" in features


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU reports AVX-512's bf16 dot products (VDPBF16PS; /proc/cpuinfo)."""
    return "avx512_bf16" in native.cpu_features().split()


def cpu_variant() -> str | None:
    """The kernel build this CPU runs: "amx", else "avx512_bf16", else None."""
    return "amx" if cpu_has_amx() else "avx512_bf16" if cpu_has_avx512_bf16() else None


def build(cache_dir: str | None = None, variant: str = "amx") -> str:
    """Compiles the kernel (once per source, flags, compiler and CPU) and returns the shared library's path."""
    name = f"{variant}_conv"
    return native.build(name, SOURCE, FLAGS[variant], cache_dir or native.cache_dir(name), WHAT)


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
    """Builds and registers the kernels once per process; None where they can run, else why not (one line).
    Where the CPU has bf16 products but the kernel cannot run (no compiler, a failed build, AMX not granted),
    it says so once in the log: bf16 convolutions then run as XLA's, correct and slower."""
    if os.environ.get("JSNN_CONV_AMX", "1") == "0":
        return "JSNN_CONV_AMX=0"
    variant = cpu_variant()
    if variant is None:
        return "this CPU has neither AMX-BF16 nor AVX512-BF16"
    try:
        library = build(variant=variant)
        ready = ctypes.cdll.LoadLibrary(library).jsnn_amx_ready()
    except (native.CompilerMissing, RuntimeError, OSError) as e:
        why = str(e).splitlines()[0]
    else:
        if ready:
            native.register(library, {target: _SYMBOLS[key] for key, target in TARGETS.items()})
            return None
        why = "the operating system did not grant AMX to this process"
    logging.getLogger(__name__).warning("bf16 convolutions run as XLA's, not on jsnn's %s kernel: %s", variant, why)
    return why


def unavailable() -> str | None:
    """Why the AMX kernels cannot run in this process (one line), or None where they can."""
    return _load()


def supports(x_shape, kernel_shape, stride: int, padding: int) -> bool:
    """Whether the kernels compute this convolution (NHWC ``x_shape``, HWIO ``kernel_shape``)."""
    kh, kw, cin, cout = kernel_shape
    padded = -(-cin // CHANNEL_MULTIPLE) * -(-cout // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE ** 2
    # square kernels only: the input gradient is the forward kernel with one padding, kh - 1 - padding, on both axes
    return (stride == 1 and kh == kw and padded <= MAX_PADDED_PRODUCTS * cin * cout
            and 0 <= padding < min(kh, kw) and x_shape[1] + 2 * padding >= kh and x_shape[2] + 2 * padding >= kw)


def _call(target: str, shapes, *args, **attrs):
    """The FFI call of ``target`` on ``args``: one f32 result of shape ``shapes``, or one for each of a list of them."""
    attrs = {k: np.int64(v) for k, v in attrs.items()}
    results = ([jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes] if isinstance(shapes, list)
               else jax.ShapeDtypeStruct(shapes, jnp.float32))
    return jax.ffi.ffi_call(TARGETS[target], results, vmap_method="sequential")(*args, **attrs)


def forward(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """The convolution itself (no VJP): bf16 ``x`` and ``kernel``, f32 result."""
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    out = (n, h + 2 * padding - kh + 1, w + 2 * padding - kw + 1, cout)
    return _call("forward", out, x, kernel, pad=padding, flip=0)


def input_grad(g: jax.Array, kernel: jax.Array, x_shape, padding: int) -> jax.Array:
    """The gradient of ``conv(x, kernel, padding)`` with respect to ``x`` (of shape ``x_shape``) for the bf16
    output gradient ``g``, f32: the forward kernel on ``g`` with the flipped, transposed ``kernel`` (what the
    backward call computes first)."""
    return _call("forward", tuple(x_shape), g, kernel, pad=kernel.shape[0] - 1 - padding, flip=1)


def gradients(x: jax.Array, kernel: jax.Array, g: jax.Array, padding: int) -> tuple[jax.Array, jax.Array]:
    """Both gradients of ``conv(x, kernel, padding)`` for the bf16 output gradient ``g``, f32, in one call."""
    return tuple(_call("backward", [x.shape, kernel.shape], x, kernel, g, pad=padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Stride-1 convolution of bf16 NHWC ``x`` with the bf16 HWIO ``kernel`` (``padding`` zeros on every
    side), f32 result. The VJP rounds the output gradient to bf16 for its products (as ``conv.conv2d``
    does for every bf16 convolution), computes both gradients in f32 and returns them in the operands'
    dtype, as autodiff of XLA's bf16 convolution does. Call only where ``supports`` and not
    ``unavailable()``."""
    return forward(x, kernel, padding)


def _conv_fwd(x, kernel, padding):
    return forward(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, res, g):
    x, kernel = res
    dx, dk = gradients(x, kernel, g.astype(jnp.bfloat16), padding)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)
