// The register-blocked micro-kernel of the executor's own dense convolutions (conv1x1.cpp, conv_rows.cpp): a tile of
// 6 output pixels x 16 output channels in 12 ymm accumulators, reduced over a list of segments, each one stretch of
// input values per pixel against the matching rows of a (K, 16) weight panel. One broadcast input value per pixel
// meets two weight vectors per step. A segment's six input pointers are free: a 1x1 conv's pixels read their own
// rows (K-slices of them), a row kernel's pixels the kernel rows of a padded input.
//
// The tile starts from the bias (first) or from the partial sums stored by the previous call; before its single
// store it adds the residual (first) and takes the ReLU (last), and with last it adds its 16 channel sums over its
// pixels to `sum` (the global average pool of conv1x1). Without AVX2 + FMA at compile time the same loops run on
// plain floats.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace adafuse {

constexpr int64_t kRows = 6;    // pixels per micro-tile
constexpr int64_t kLanes = 16;  // output channels per micro-tile and weight panel (two ymm registers)

struct Segment {          // n reduction steps: pixel i reads a[i][0..n), the panel rows w .. w + n
  const float* a[kRows];  // pixels past the tile's R may hold anything (they are not read)
  int64_t w;              // offset of the first weight row in the panel, in floats (row = kLanes floats)
  int64_t n;
};

struct Tile {
  float* c[kRows];        // where each pixel's 16 outputs go
  const float* r[kRows];  // its residual, or nullptr
  float* sum;             // where the tile's 16 channel sums over its pixels are added, or nullptr
};

// One (R x 16) tile over segments [segs, segs + n_segs) of panel b.
template <int R>
inline void micro_tile(const Tile& t, const Segment* segs, int64_t n_segs, const float* b, const float* bias,
                       bool first, bool last, bool relu) {
#if defined(__AVX2__) && defined(__FMA__)
  // Twelve named accumulators, not an array: GCC keeps an indexed array on the stack and reloads it every step.
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  const __m256 zero = _mm256_setzero_ps();
#define ADAFUSE_ROWS(X) X(0, c00, c01) X(1, c10, c11) X(2, c20, c21) X(3, c30, c31) X(4, c40, c41) X(5, c50, c51)
#define ADAFUSE_INIT(i, lo, hi)                                                              \
  if constexpr (i < R) {                                                                     \
    lo = _mm256_loadu_ps(first ? bias : t.c[i]);                                             \
    hi = _mm256_loadu_ps(first ? bias + 8 : t.c[i] + 8);                                     \
  }
#define ADAFUSE_FMA(i, lo, hi)                                                               \
  if constexpr (i < R) {                                                                     \
    const __m256 v = _mm256_broadcast_ss(a##i + k);                                          \
    lo = _mm256_fmadd_ps(v, w0, lo);                                                         \
    hi = _mm256_fmadd_ps(v, w1, hi);                                                         \
  }
#define ADAFUSE_STORE(i, lo, hi)                                                             \
  if constexpr (i < R) {                                                                     \
    if (first && t.r[i] != nullptr) {                                                        \
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(t.r[i]));                                       \
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(t.r[i] + 8));                                   \
    }                                                                                        \
    if (last && relu) {                                                                      \
      lo = _mm256_max_ps(lo, zero);                                                          \
      hi = _mm256_max_ps(hi, zero);                                                          \
    }                                                                                        \
    _mm256_storeu_ps(t.c[i], lo);                                                            \
    _mm256_storeu_ps(t.c[i] + 8, hi);                                                        \
  }
  ADAFUSE_ROWS(ADAFUSE_INIT)
  for (const Segment* s = segs; s != segs + n_segs; ++s) {
    const float *a0 = s->a[0], *a1 = s->a[1], *a2 = s->a[2], *a3 = s->a[3], *a4 = s->a[4], *a5 = s->a[5];
    const float* bk = b + s->w;
    for (int64_t k = 0; k < s->n; ++k, bk += kLanes) {
      const __m256 w0 = _mm256_loadu_ps(bk), w1 = _mm256_loadu_ps(bk + 8);
      ADAFUSE_ROWS(ADAFUSE_FMA)
    }
  }
  ADAFUSE_ROWS(ADAFUSE_STORE)
  if (last && t.sum != nullptr) {
    __m256 lo = c00, hi = c01;
    if constexpr (R > 1) lo = _mm256_add_ps(lo, c10), hi = _mm256_add_ps(hi, c11);
    if constexpr (R > 2) lo = _mm256_add_ps(lo, c20), hi = _mm256_add_ps(hi, c21);
    if constexpr (R > 3) lo = _mm256_add_ps(lo, c30), hi = _mm256_add_ps(hi, c31);
    if constexpr (R > 4) lo = _mm256_add_ps(lo, c40), hi = _mm256_add_ps(hi, c41);
    if constexpr (R > 5) lo = _mm256_add_ps(lo, c50), hi = _mm256_add_ps(hi, c51);
    _mm256_storeu_ps(t.sum, _mm256_add_ps(_mm256_loadu_ps(t.sum), lo));
    _mm256_storeu_ps(t.sum + 8, _mm256_add_ps(_mm256_loadu_ps(t.sum + 8), hi));
  }
#undef ADAFUSE_STORE
#undef ADAFUSE_FMA
#undef ADAFUSE_INIT
#undef ADAFUSE_ROWS
#else
  float acc[R][kLanes];
  for (int r = 0; r < R; ++r)
    for (int64_t l = 0; l < kLanes; ++l) acc[r][l] = first ? bias[l] : t.c[r][l];
  for (const Segment* s = segs; s != segs + n_segs; ++s)
    for (int64_t k = 0; k < s->n; ++k)
      for (int r = 0; r < R; ++r)
        for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += s->a[r][k] * b[s->w + k * kLanes + l];
  for (int r = 0; r < R; ++r)
    if (first && t.r[r] != nullptr)
      for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += t.r[r][l];
  for (int r = 0; r < R; ++r)
    for (int64_t l = 0; l < kLanes; ++l) {
      t.c[r][l] = last && relu && acc[r][l] < 0.f ? 0.f : acc[r][l];
      if (last && t.sum != nullptr) t.sum[l] += t.c[r][l];
    }
#endif
}

// Pixels per work-item block: a sample's `pixels` split evenly into blocks of about block_pixels, rounded up to
// whole micro-tiles (so that no block spans two samples: the pool's sums stay per sample).
inline int64_t block_size(int64_t pixels, int64_t block_pixels) {
  const int64_t per_sample = std::max<int64_t>(1, (pixels + block_pixels / 2) / std::max<int64_t>(block_pixels, 1));
  return ((pixels + per_sample - 1) / per_sample + kRows - 1) / kRows * kRows;
}

// Panels per work-item chunk: as many as make about 256 KiB (half of L2) of weights over a slice of slice_k rows.
inline int64_t panel_chunk(int64_t slice_k, int64_t panels) {
  return std::clamp<int64_t>((int64_t{1} << 16) / (slice_k * kLanes), 1, panels);
}

using MicroTile = void (*)(const Tile&, const Segment*, int64_t, const float*, const float*, bool, bool, bool);
constexpr MicroTile kMicroTiles[kRows + 1] = {nullptr,        micro_tile<1>, micro_tile<2>, micro_tile<3>,
                                               micro_tile<4>, micro_tile<5>, micro_tile<6>};

}  // namespace adafuse
