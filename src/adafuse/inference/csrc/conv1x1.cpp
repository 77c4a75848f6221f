// Dense 1x1 convolution on NHWC float32 activations with the bias, the residual add and the ReLU in registers:
// out (P, N) = act(x (P, K) @ w (K, N) + bias (+ residual)), P output pixels, stride 1 or 2; optionally also the
// mean of the result over each sample's pixels (the global average pool the next block's policy needs).
//
// Why our own: oneDNN's NHWC 1x1 kernel on AVX2 blocks its weights by 24 output channels and reads the residual in
// a separate post-op pass; a ResNet's expanding conv3 (C/4 -> C channels plus the residual) then runs at 1.24x (alone)
// to 1.47x (in the network) of ONNX Runtime's time (docs/speed.md). This is the classic register-blocked GEMM: a
// micro-tile of kRows output pixels x kTilePanels 16-channel panels (7 x 32 in 14 zmm accumulators with AVX-512,
// 6 x 16 in 12 ymm with AVX2; micro_tile.h) reduces over K broadcasting one input value per pixel against the
// tile's weight vectors; the weights are packed once as (N / 16, K, 16) panels. The tile starts from the bias; the
// residual is added and the ReLU taken before its single store (the residual's lines are prefetched one tile ahead:
// in a network it was written three convolutions earlier and is out of cache), and the pool's partial sums are
// taken from the same registers. The next tile's input rows are prefetched too (on 56 x 56 maps a block's inputs
// do not fit L2: 72 -> 80 GMAC/s). When K is long the reduction is split into slices of kSliceK input channels (a
// 16-wide panel slice then stays in L1); the tile is stored between slices and reloaded, the residual added at the
// first slice. On small maps (a work item of under 128 pixels: streaming at batch 1) the micro-tiles also prefetch
// the weights of the next (slice, chunk) into L2, one line every other reduction step: there each weight serves
// so few pixels that its first read from memory is not hidden behind arithmetic (ResNet-50's 7 x 7 layers at
// batch 1: 0.89-0.90 of the time; larger maps do not prefetch). out may be the residual itself (in place): each
// element is read before it is written, by the same thread.
//
// Work items are (block of pixels, chunk of output channels): a chunk's weights stay in L2 while the block's
// micro-tiles sweep it, a tile's input rows stay in L1 across the chunk's panels, and the output rows are written
// contiguously. A block is part of one sample, or on small maps a group of whole samples. Without AVX-512 or
// AVX2 + FMA at compile time the same loops run on plain floats (the compiler vectorises what it can). Registered
// as torch.ops.adafuse_cpu.conv1x1 (see adafuse/inference/kernels.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "micro_tile.h"
#include "nhwc.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace {

using adafuse::check_nhwc;
using adafuse::kLanes;
using adafuse::kRows;
using adafuse::kTilePanels;

// Work items of fewer pixels (a frame's 7 x 7 map at batch 1) prefetch the next weights: each weight serves so few
// pixels that its first read, from memory, is not hidden behind arithmetic (512 -> 2048 at 7 x 7: 0.89 of the time).
constexpr int64_t kPrefetchPixels = 128;
constexpr int64_t kSliceK = 256;  // input channels per reduction slice: a (kSliceK x 16) panel slice is 16 KiB

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
  adafuse::check_bias(bias, N);
  const float* res = adafuse::residual_data(residual, out);
  if (mean.has_value()) adafuse::check_mean(*mean, B, N);
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();

  const int64_t HW = Ho * Wo, panels = N / kLanes;
  // A chunk of panels whose weights over one reduction slice fill about 256 KiB (half of L2). Pixels: on maps of at
  // least block_pixels, each sample's split evenly into blocks of about block_pixels (whole micro-tiles but the
  // last); on smaller maps (7x7, 14x14) a block is a whole sample and a work item takes several (a group), as many
  // as make about block_pixels, so that a chunk's weights serve all of them from L2 instead of being fetched again
  // for every sample. No block spans two samples (the pool's sums are per block).
  const int64_t chunk = adafuse::panel_chunk(std::min(K, kSliceK), panels);
  const int64_t n_chunks = (panels + chunk - 1) / chunk;
  const int64_t wanted = HW >= block_pixels ? 1 : std::min(B, (block_pixels + HW - 1) / HW);  // samples per group
  const int64_t n_groups_of_samples = (B + wanted - 1) / wanted;
  const int64_t per_group = (B + n_groups_of_samples - 1) / n_groups_of_samples;  // equal groups: 8 as 4 + 4
  const int64_t block = per_group > 1 ? HW : adafuse::block_size(HW, block_pixels);
  const int64_t n_blocks = (HW + block - 1) / block;  // per sample
  const int64_t n_groups = per_group > 1 ? n_groups_of_samples : B * n_blocks;
  // The pool: each block's channel sums in its own row (no two threads add to one row), reduced after the loop.
  std::vector<float> sums(mean.has_value() ? B * n_blocks * N : 0, 0.f);
  auto in_row = [&](int64_t p) {  // output pixel p -> its input row
    if (stride == 1) return xp + p * K;
    const int64_t n = p / HW, y = p / Wo % Ho, xo = p % Wo;
    return xp + ((n * H + y * stride) * W + xo * stride) * K;
  };
  at::parallel_for(0, n_groups * n_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t group = item / n_chunks;
      const int64_t blk0 = group * per_group, blk1 = std::min(B * n_blocks, blk0 + per_group);
      const int64_t j0 = item % n_chunks * chunk, j1 = std::min(panels, j0 + chunk);
      for (int64_t k0 = 0; k0 < K; k0 += kSliceK) {
        const int64_t k1 = std::min(K, k0 + kSliceK);
        // the weights of the next (slice, chunk) of panels, into L2 during this slice's micro-tiles, panel by panel
        const bool last_slice = k1 == K;
        const int64_t nk0 = last_slice ? 0 : k1, nk1 = last_slice ? std::min(K, kSliceK) : std::min(K, k1 + kSliceK);
        const int64_t nj0 = last_slice ? j1 % panels : j0, nj1 = last_slice ? std::min(panels, nj0 + chunk) : j1;
        int64_t pf_panel = nj0, pf_row = nk0;
        const int64_t item_pixels = blk1 - blk0 > 1 ? (blk1 - blk0) * HW : block;
        const int64_t pf_cap = item_pixels < kPrefetchPixels ? std::max<int64_t>((k1 - k0) / 2, 1) : 0;
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          const int64_t b = blk / n_blocks;
          const int64_t p0 = b * HW + blk % n_blocks * block, p1 = std::min((b + 1) * HW, p0 + block);
          float* block_sums = sums.empty() ? nullptr : sums.data() + blk * N;
          for (int64_t p = p0; p < p1; p += kRows) {
            const int64_t rows = std::min(kRows, p1 - p);
            adafuse::Tile t;
            adafuse::Segment seg{{}, k0 * kLanes, k1 - k0};
            for (int64_t r = 0; r < kRows; ++r) seg.a[r] = in_row(p + std::min(r, rows - 1)) + k0;
            for (int64_t r = 0; r < rows; ++r) {
              t.c[r] = op + (p + r) * N + j0 * kLanes;
              t.r[r] = res == nullptr ? nullptr : res + (p + r) * N + j0 * kLanes;
            }
            for (int64_t r = p + kRows; r < std::min(p1, p + 2 * kRows); ++r) {  // the next tile's input rows
              const float* a = in_row(r) + k0;
              for (int64_t k = 0; k < k1 - k0; k += 16) __builtin_prefetch(a + k, 0);
            }
            for (int64_t j = j0; j < j1; j += kTilePanels) {
              const int64_t n_panels = std::min(kTilePanels, j1 - j);
              for (int64_t r = p + kRows; r < std::min(p1, p + 2 * kRows); ++r)  // the next tile's output lines
                for (int64_t q = j; q < j + n_panels; ++q) {
                  __builtin_prefetch(op + r * N + q * kLanes, 1);
                  if (res != nullptr && res != op) __builtin_prefetch(res + r * N + q * kLanes, 0);
                }
              if (pf_cap > 0 && pf_panel < nj1) {
                seg.pf = wp + (pf_panel * K + pf_row) * kLanes;
                seg.pf_lines = std::min(pf_cap, nk1 - pf_row);
                pf_row += seg.pf_lines;
                if (pf_row == nk1) pf_row = nk0, ++pf_panel;
              } else {
                seg.pf_lines = 0;
              }
              t.sum = block_sums == nullptr ? nullptr : block_sums + j * kLanes;
              adafuse::micro_tile_for(rows, n_panels)(t, &seg, 1, wp + j * K * kLanes, K * kLanes, bp + j * kLanes,
                                                      k0 == 0, k1 == K, relu);
              for (int64_t r = 0; r < rows; ++r) {
                t.c[r] += n_panels * kLanes;
                if (t.r[r] != nullptr) t.r[r] += n_panels * kLanes;
              }
            }
          }
        }
      }
    }
  });
  if (mean.has_value()) adafuse::mean_of_block_sums(sums, B, n_blocks, N, HW, mean->data_ptr<float>());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "conv1x1(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? residual, Tensor(b!)? mean, "
      "int stride, bool relu, int block_pixels) -> ()");
  m.impl("conv1x1", c10::DispatchKey::CPU, TORCH_FN(conv1x1));
}
