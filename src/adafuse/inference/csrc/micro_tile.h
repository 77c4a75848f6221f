// The register-blocked micro-kernel of the executor's own dense convolutions (conv1x1.cpp, conv_rows.cpp): a tile of
// R <= kRows output pixels x P 16-channel weight panels, reduced over a list of segments, each one stretch of input
// values per pixel against the matching rows of (K, 16) weight panels. One broadcast input value per pixel meets
// the tile's weight vectors at each step. A segment's input pointers are free: a 1x1 conv's pixels read their own
// rows (K-slices of them), a row kernel's pixels the kernel rows of a padded input.
//
// Two register layouts, chosen at compile time: with AVX-512, 7 pixels x 2 panels (32 channels) in 14 zmm
// accumulators (7 divides every map of a ResNet at 224 px: 112, 56, 28, 14, 7, so tiles are whole; and 7 input
// pointers + 2 weight pointers fit the general registers); with AVX2 + FMA, 6 pixels x 1 panel in 12 ymm
// accumulators. A 16-lane panel is one zmm or two ymm, so the packed weights are the same on both. An odd last
// panel runs as a 1-panel tile (P = 1).
//
// The tile starts from the bias (first) or from the partial sums stored by the previous call; before its single
// store it adds the residual (first) and takes the ReLU (last), and with last it adds its channel sums over its
// pixels to `sum` (the global average pool of conv1x1). Without either at compile time the same loops run on
// plain floats.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#if (defined(__AVX2__) && defined(__FMA__)) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace adafuse {

constexpr int64_t kLanes = 16;  // output channels per weight panel (one zmm, two ymm)
#if defined(__AVX512F__)
constexpr int64_t kRows = 7;        // pixels per micro-tile
constexpr int64_t kTilePanels = 2;  // panels per micro-tile
#else
constexpr int64_t kRows = 6;
constexpr int64_t kTilePanels = 1;
#endif

struct Segment {          // n reduction steps: pixel i reads a[i][0..n), the panel rows w .. w + n
  const float* a[kRows];  // pixels past the tile's R may hold anything (they are not read)
  int64_t w;              // offset of the first weight row in the panel, in floats (row = kLanes floats)
  int64_t n;
  // AVX-512 builds: cache lines [pf, pf + 16 pf_lines) are prefetched into L2 during the segment's steps, one every
  // other step, so at most n / 2 of them (the weights a later tile reads, on small maps, where each weight serves
  // so few pixels that its first read from memory is not hidden behind arithmetic).
  const float* pf = nullptr;
  int64_t pf_lines = 0;
};

struct Tile {
  float* c[kRows];        // where each pixel's P x 16 outputs go
  const float* r[kRows];  // its residual, or nullptr
  float* sum;             // where the tile's P x 16 channel sums over its pixels are added, or nullptr
};

// One (R x P·16) tile over segments [segs, segs + n_segs) of panels b, b + panel, ... (panel: floats per panel);
// bias, the outputs, the residual and the sums of the P panels are consecutive.
template <int R, int P>
inline void micro_tile(const Tile& t, const Segment* segs, int64_t n_segs, const float* b, int64_t panel,
                       const float* bias, bool first, bool last, bool relu) {
  static_assert(P >= 1 && P <= kTilePanels, "panels per tile");
#if defined(__AVX512F__)
  // Fourteen named accumulators, not an array: GCC keeps an indexed array on the stack and reloads it every step.
  __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61;
  const __m512 zero = _mm512_setzero_ps();
#define ADAFUSE_ROWS(X) \
  X(0, c00, c01) X(1, c10, c11) X(2, c20, c21) X(3, c30, c31) X(4, c40, c41) X(5, c50, c51) X(6, c60, c61)
#define ADAFUSE_INIT(i, lo, hi)                                                              \
  if constexpr (i < R) {                                                                     \
    lo = _mm512_loadu_ps(first ? bias : t.c[i]);                                             \
    if constexpr (P == 2) hi = _mm512_loadu_ps(first ? bias + 16 : t.c[i] + 16);             \
  }
#define ADAFUSE_FMA(i, lo, hi)                                                               \
  if constexpr (i < R) {                                                                     \
    const __m512 v = _mm512_set1_ps(a##i[kk]);                                               \
    lo = _mm512_fmadd_ps(v, w0, lo);                                                         \
    if constexpr (P == 2) hi = _mm512_fmadd_ps(v, w1, hi);                                   \
  }
#define ADAFUSE_STORE(i, lo, hi)                                                             \
  if constexpr (i < R) {                                                                     \
    if (first && t.r[i] != nullptr) {                                                        \
      lo = _mm512_add_ps(lo, _mm512_loadu_ps(t.r[i]));                                       \
      if constexpr (P == 2) hi = _mm512_add_ps(hi, _mm512_loadu_ps(t.r[i] + 16));            \
    }                                                                                        \
    if (last && relu) {                                                                      \
      lo = _mm512_max_ps(lo, zero);                                                          \
      if constexpr (P == 2) hi = _mm512_max_ps(hi, zero);                                    \
    }                                                                                        \
    _mm512_storeu_ps(t.c[i], lo);                                                            \
    if constexpr (P == 2) _mm512_storeu_ps(t.c[i] + 16, hi);                                 \
  }
#define ADAFUSE_SUM(i, lo, hi)                                                               \
  if constexpr (i > 0 && i < R) {                                                            \
    s0 = _mm512_add_ps(s0, lo);                                                              \
    if constexpr (P == 2) s1 = _mm512_add_ps(s1, hi);                                        \
  }
#define ADAFUSE_STEP(step)                                                                   \
  {                                                                                          \
    const int64_t kk = (step);                                                               \
    const __m512 w0 = _mm512_loadu_ps(bk + kk * kLanes);                                     \
    __m512 w1;                                                                               \
    if constexpr (P == 2) w1 = _mm512_loadu_ps(bk + kk * kLanes + panel);                    \
    ADAFUSE_ROWS(ADAFUSE_FMA)                                                                \
  }
  ADAFUSE_ROWS(ADAFUSE_INIT)
  for (const Segment* s = segs; s != segs + n_segs; ++s) {
    const float *a0 = s->a[0], *a1 = s->a[1], *a2 = s->a[2], *a3 = s->a[3], *a4 = s->a[4], *a5 = s->a[5],
                *a6 = s->a[6];
    const float* bk = b + s->w;
    const float* pf = s->pf;
    const float* const pf_end = s->pf + s->pf_lines * kLanes;
    int64_t k = 0;
    if (pf < pf_end) {  // a separate loop: the check alone cost 3-6 % where nothing is prefetched
      for (; k + 2 <= s->n; k += 2) {
        if (pf < pf_end) {
          __builtin_prefetch(pf, 0, 2);
          pf += kLanes;
        }
        ADAFUSE_STEP(k)
        ADAFUSE_STEP(k + 1)
      }
    }
    for (; k < s->n; ++k) ADAFUSE_STEP(k)
  }
  ADAFUSE_ROWS(ADAFUSE_STORE)
  if (last && t.sum != nullptr) {
    __m512 s0 = c00, s1 = c01;
    ADAFUSE_ROWS(ADAFUSE_SUM)
    _mm512_storeu_ps(t.sum, _mm512_add_ps(_mm512_loadu_ps(t.sum), s0));
    if constexpr (P == 2) _mm512_storeu_ps(t.sum + 16, _mm512_add_ps(_mm512_loadu_ps(t.sum + 16), s1));
  }
#undef ADAFUSE_SUM
#undef ADAFUSE_STORE
#undef ADAFUSE_STEP
#undef ADAFUSE_FMA
#undef ADAFUSE_INIT
#undef ADAFUSE_ROWS
#elif defined(__AVX2__) && defined(__FMA__)
  (void)panel;  // one panel per tile
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
  constexpr int64_t L = P * kLanes;
  float acc[R][L];
  for (int r = 0; r < R; ++r)
    for (int64_t l = 0; l < L; ++l) acc[r][l] = first ? bias[l] : t.c[r][l];
  for (const Segment* s = segs; s != segs + n_segs; ++s)
    for (int64_t k = 0; k < s->n; ++k)
      for (int r = 0; r < R; ++r)
        for (int64_t l = 0; l < L; ++l)
          acc[r][l] += s->a[r][k] * b[l / kLanes * panel + s->w + k * kLanes + l % kLanes];
  for (int r = 0; r < R; ++r)
    if (first && t.r[r] != nullptr)
      for (int64_t l = 0; l < L; ++l) acc[r][l] += t.r[r][l];
  for (int r = 0; r < R; ++r)
    for (int64_t l = 0; l < L; ++l) {
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

// Panels per work-item chunk: as many as make about 256 KiB (half of L2) of weights over a slice of slice_k rows,
// whole tiles of kTilePanels panels.
inline int64_t panel_chunk(int64_t slice_k, int64_t panels) {
  const int64_t chunk = std::max<int64_t>((int64_t{1} << 16) / (slice_k * kLanes), 1);
  return std::min(panels, (chunk + kTilePanels - 1) / kTilePanels * kTilePanels);
}

using MicroTile = void (*)(const Tile&, const Segment*, int64_t, const float*, int64_t, const float*, bool, bool,
                           bool);

template <int P, typename Rows>
struct TileTable;
template <int P, int... R>
struct TileTable<P, std::integer_sequence<int, R...>> {  // entry r: the tile of r pixels (entry 0 unused)
  static constexpr MicroTile table[] = {nullptr, micro_tile<R + 1, P>...};
};

// The micro-tile for `rows` pixels (1 .. kRows) and `panels` panels (1 .. kTilePanels).
inline MicroTile micro_tile_for(int64_t rows, int64_t panels) {
  using Rows = std::make_integer_sequence<int, kRows>;
  if (kTilePanels == 2 && panels == 2) return TileTable<kTilePanels, Rows>::table[rows];
  return TileTable<1, Rows>::table[rows];
}

}  // namespace adafuse
