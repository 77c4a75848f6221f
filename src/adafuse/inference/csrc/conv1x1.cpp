// Dense 1x1 convolution on NHWC float32 activations with the bias, the residual add and the ReLU in registers:
// out (P, N) = act(x (P, K) @ w (K, N) + bias (+ residual)), P output pixels, stride 1 or 2; optionally also the
// mean of the result over each sample's pixels (the global average pool the next block's policy needs).
//
// Why our own: oneDNN's NHWC 1x1 kernel on AVX2 blocks its weights by 24 output channels and reads the residual in
// a separate post-op pass; a ResNet's expanding conv3 (C/4 -> C channels plus the residual) then runs at 1.24x (alone)
// to 1.47x (in the network) of ONNX Runtime's time (docs/speed.md). This is the classic register-blocked GEMM: a
// micro-tile of 6 output pixels x 16 output channels (12 ymm accumulators) reduces over K broadcasting one input
// value per pixel against two weight vectors; the weights are packed once as (N / 16, K, 16) panels. The tile
// starts from the bias; the residual is added and the ReLU taken before its single store (the residual's lines
// are prefetched one tile ahead: in a network it was written three convolutions earlier and is out of cache), and
// the pool's partial sums are taken from the same registers. When K is long the reduction is split into slices of
// kSliceK input channels (a 16-wide panel slice then stays in L1); the tile is stored between slices and reloaded,
// the residual added at the first slice. out may be the residual itself (in place): each element is read before it
// is written, by the same thread.
//
// Work items are (block of one sample's pixels, chunk of output channels): a chunk's weights stay in L2 while the
// block's micro-tiles sweep it, a tile's input rows stay in L1 across the chunk's panels, and the output rows are
// written contiguously. Without AVX2 and FMA at compile time the same loops run on plain floats (the compiler
// vectorises what it can). Registered as torch.ops.adafuse_cpu.conv1x1 (see adafuse/inference/kernels.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "nhwc.h"

#include <algorithm>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

using adafuse::check_nhwc;

constexpr int64_t kRows = 6;       // pixels per micro-tile
constexpr int64_t kLanes = 16;     // output channels per micro-tile (two ymm registers)
constexpr int64_t kSliceK = 256;   // input channels per reduction slice: a (kSliceK x 16) panel slice is 16 KiB

struct Tile {
  const float* a[kRows];  // the input row (K values) of each pixel
  float* c[kRows];        // where each pixel's 16 outputs go (ld = N)
  const float* r[kRows];  // its residual, or nullptr
  float* sum;             // where the tile's 16 channel sums over its pixels are added, or nullptr
};

// One (R x 16) micro-tile over input channels [k0, k1) of panel b (K x 16). first: start from the bias and add the
// residual; otherwise start from the stored partial sums. last: apply the ReLU (when asked) before the store and
// add the tile's channel sums to t.sum.
template <int R>
inline void micro_tile(const Tile& t, const float* b, int64_t k0, int64_t k1, const float* bias, bool first,
                       bool last, bool relu) {
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
  const float *a0 = t.a[0], *a1 = t.a[R > 1 ? 1 : 0], *a2 = t.a[R > 2 ? 2 : 0], *a3 = t.a[R > 3 ? 3 : 0],
              *a4 = t.a[R > 4 ? 4 : 0], *a5 = t.a[R > 5 ? 5 : 0];
  const float* bk = b + k0 * kLanes;
  for (int64_t k = k0; k < k1; ++k, bk += kLanes) {
    const __m256 w0 = _mm256_loadu_ps(bk), w1 = _mm256_loadu_ps(bk + 8);
    ADAFUSE_ROWS(ADAFUSE_FMA)
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
    for (int64_t l = 0; l < kLanes; ++l)
      acc[r][l] = first ? bias[l] : t.c[r][l];
  for (int64_t k = k0; k < k1; ++k)
    for (int r = 0; r < R; ++r)
      for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += t.a[r][k] * b[k * kLanes + l];
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

using MicroTile = void (*)(const Tile&, const float*, int64_t, int64_t, const float*, bool, bool, bool);
constexpr MicroTile kMicroTiles[kRows + 1] = {nullptr,        micro_tile<1>, micro_tile<2>, micro_tile<3>,
                                               micro_tile<4>, micro_tile<5>, micro_tile<6>};

void conv1x1(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& out,
             const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& mean, int64_t stride,
             bool relu, int64_t block_pixels) {
  check_nhwc(x, "x");
  check_nhwc(out, "out");
  const int64_t B = x.size(0), K = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = out.size(1), Ho = out.size(2), Wo = out.size(3);
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2");
  TORCH_CHECK(out.size(0) == B && Ho == (H - 1) / stride + 1 && Wo == (W - 1) / stride + 1,
              "out has the wrong size");
  TORCH_CHECK(N % kLanes == 0, "C_out must be a multiple of ", kLanes);
  TORCH_CHECK(w.is_contiguous() && w.scalar_type() == at::kFloat && w.numel() == K * N, "bad packed weight");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == N, "bad bias");
  const float* res = nullptr;
  if (residual.has_value()) {
    check_nhwc(*residual, "residual");
    TORCH_CHECK(residual->sizes() == out.sizes(), "residual must have the shape of out");
    res = residual->data_ptr<float>();
  }
  if (mean.has_value())
    TORCH_CHECK(mean->is_contiguous() && mean->scalar_type() == at::kFloat && mean->dim() == 2 &&
                    mean->size(0) == B && mean->size(1) == N,
                "mean must be a contiguous float32 (B, C_out) tensor");
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();

  const int64_t HW = Ho * Wo, panels = N / kLanes;
  // A chunk of panels whose weights over one reduction slice fill about 256 KiB (half of L2); each sample's pixels
  // split evenly into blocks of about block_pixels (whole micro-tiles but the last), so that no block spans two
  // samples (the pool's sums).
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 16) / (std::min(K, kSliceK) * kLanes), 1, panels);
  const int64_t n_chunks = (panels + chunk - 1) / chunk;
  const int64_t per_sample = std::max<int64_t>(1, (HW + block_pixels / 2) / std::max<int64_t>(block_pixels, 1));
  const int64_t block = ((HW + per_sample - 1) / per_sample + kRows - 1) / kRows * kRows;
  const int64_t n_blocks = (HW + block - 1) / block;  // per sample
  // The pool: each block's channel sums in its own row (no two threads add to one row), reduced after the loop.
  std::vector<float> sums(mean.has_value() ? B * n_blocks * N : 0, 0.f);
  auto in_row = [&](int64_t p) {  // output pixel p -> its input row
    if (stride == 1) return xp + p * K;
    const int64_t n = p / HW, y = p / Wo % Ho, xo = p % Wo;
    return xp + ((n * H + y * stride) * W + xo * stride) * K;
  };
  at::parallel_for(0, B * n_blocks * n_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / n_chunks, b = blk / n_blocks;
      const int64_t p0 = b * HW + blk % n_blocks * block, p1 = std::min((b + 1) * HW, p0 + block);
      const int64_t j0 = item % n_chunks * chunk, j1 = std::min(panels, j0 + chunk);
      float* block_sums = sums.empty() ? nullptr : sums.data() + blk * N;
      for (int64_t k0 = 0; k0 < K; k0 += kSliceK) {
        const int64_t k1 = std::min(K, k0 + kSliceK);
        for (int64_t p = p0; p < p1; p += kRows) {
          const int64_t rows = std::min(kRows, p1 - p);
          Tile t;
          for (int64_t r = 0; r < rows; ++r) {
            t.a[r] = in_row(p + r);
            t.c[r] = op + (p + r) * N + j0 * kLanes;
            t.r[r] = res == nullptr ? nullptr : res + (p + r) * N + j0 * kLanes;
          }
          for (int64_t j = j0; j < j1; ++j) {
            for (int64_t r = p + kRows; r < std::min(p1, p + 2 * kRows); ++r) {  // the next tile's output lines
              __builtin_prefetch(op + r * N + j * kLanes, 1);
              if (res != nullptr && res != op) __builtin_prefetch(res + r * N + j * kLanes, 0);
            }
            t.sum = block_sums == nullptr ? nullptr : block_sums + j * kLanes;
            kMicroTiles[rows](t, wp + j * K * kLanes, k0, k1, bp + j * kLanes, k0 == 0, k1 == K, relu);
            for (int64_t r = 0; r < rows; ++r) {
              t.c[r] += kLanes;
              if (t.r[r] != nullptr) t.r[r] += kLanes;
            }
          }
        }
      }
    }
  });
  if (mean.has_value()) {
    float* m = mean->data_ptr<float>();
    const float scale = 1.f / static_cast<float>(HW);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < N; ++c) {
        float total = 0.f;
        for (int64_t i = 0; i < n_blocks; ++i) total += sums[(b * n_blocks + i) * N + c];
        m[b * N + c] = total * scale;
      }
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "conv1x1(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? residual, Tensor(b!)? mean, "
      "int stride, bool relu, int block_pixels) -> ()");
  m.impl("conv1x1", c10::DispatchKey::CPU, TORCH_FN(conv1x1));
}
