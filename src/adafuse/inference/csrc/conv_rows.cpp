// Dense k x k convolution on a zero-padded NHWC float32 input, on the micro-tile kernel (micro_tile.h):
// out (P, N) = act(conv(x) + bias (+ residual)), any stride and kernel size; optionally followed by a ResNet
// stem's 3 x 3 / stride 2 / padding 1 max pool, fused (max_pool).
//
// Once the input carries its padding, the kw taps of one kernel row read kw x C_in consecutive floats of the
// input (pixels ix .. ix + kw - 1, all channels), and the weights, packed once as (N / 16, kh, kw, C_in, 16)
// panels, hold the matching rows in the same order: each kernel row of a pixel is one contiguous segment of the
// reduction, with no bounds checks. A ResNet stem (7 x 7, 3 channels) is 7 segments of 21 values. The reduction
// is split into slices of about kSliceK values (several kernel rows, or windows of one long row), the tile stored
// between slices. Why only thin inputs run here (FoldedConv decides): over 64+ channels a row is 192+ values and
// oneDNN's own NHWC 3 x 3 ran 5-25% faster than this; on the stem this runs ~25% faster than oneDNN.
//
// Work items are (block of about block_pixels pixels of one sample, chunk of output panels whose weights over one
// slice fill about 256 KiB); within an item, panels outer and tiles inner, so that a panel's slice of weights stays
// in L1 while the block's tiles stream their inputs. With max_pool an item is a band of pooled rows instead: it
// computes the convolution rows the band's windows read into a per-thread buffer and pools them, so the full-size
// convolution output (25 MB for a clip of 8 at 224 px) is neither written nor read back. Registered as
// torch.ops.adafuse_cpu.conv_rows (see adafuse/inference/kernels.py).

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

constexpr int64_t kSliceK = 256;

struct Slice {  // kernel rows [r0, r1), values [c0, c1) of each row (a row holds kw x C_in values)
  int64_t r0, r1, c0, c1;
};

std::vector<Slice> slices_of(int64_t kh, int64_t row) {
  std::vector<Slice> out;
  if (row >= kSliceK) {
    for (int64_t r = 0; r < kh; ++r)
      for (int64_t c = 0; c < row; c += kSliceK) out.push_back({r, r + 1, c, std::min(row, c + kSliceK)});
    return out;
  }
  const int64_t n = (kh + kSliceK / row - 1) / (kSliceK / row), per = (kh + n - 1) / n;  // even split
  for (int64_t r = 0; r < kh; r += per) out.push_back({r, std::min(kh, r + per), 0, row});
  return out;
}

struct Geometry {
  int64_t B, C, Hp, Wp, N, Ho, Wo, kh, kw, stride, row, K;
};

// Output pixels [p0, p1) of sample b (pixels of the convolution's output, row-major), output panels [j0, j1),
// written to dst + (p - p0) * N (+ residual, when given, at the same offset of res) after ReLU when asked.
void run_block(const Geometry& g, const std::vector<Slice>& slices, const float* x, const float* w,
               const float* bias, const float* res, float* dst, int64_t b, int64_t p0, int64_t p1, int64_t j0,
               int64_t j1, bool relu, std::vector<adafuse::Segment>& segs) {
  const int64_t n_tiles = (p1 - p0 + kRows - 1) / kRows, per_tile = slices[0].r1 - slices[0].r0;
  for (size_t si = 0; si < slices.size(); ++si) {
    const Slice& sl = slices[si];
    const int64_t rows = sl.r1 - sl.r0;
    segs.resize(n_tiles * per_tile);
    for (int64_t ti = 0; ti < n_tiles; ++ti) {  // every tile's segments: one per kernel row of the slice
      const int64_t p = p0 + ti * kRows, n_rows = std::min(kRows, p1 - p);
      const float* at[kRows];  // each pixel's top-left input value
      for (int64_t r = 0; r < kRows; ++r) {
        const int64_t q = p + std::min(r, n_rows - 1), y = q / g.Wo * g.stride, xo = q % g.Wo * g.stride;
        at[r] = x + ((b * g.Hp + y) * g.Wp + xo) * g.C;
      }
      for (int64_t dy = 0; dy < rows; ++dy) {
        adafuse::Segment& seg = segs[ti * per_tile + dy];
        for (int64_t r = 0; r < kRows; ++r) seg.a[r] = at[r] + (sl.r0 + dy) * g.Wp * g.C + sl.c0;
        seg.w = ((sl.r0 + dy) * g.row + sl.c0) * kLanes;
        seg.n = sl.c1 - sl.c0;
      }
    }
    for (int64_t j = j0; j < j1; j += kTilePanels) {
      const int64_t n_panels = std::min(kTilePanels, j1 - j);
      for (int64_t ti = 0; ti < n_tiles; ++ti) {
        const int64_t p = p0 + ti * kRows, n_rows = std::min(kRows, p1 - p), o = (p - p0) * g.N + j * kLanes;
        adafuse::Tile t;
        for (int64_t r = 0; r < n_rows; ++r) {
          t.c[r] = dst + o + r * g.N;
          t.r[r] = res == nullptr ? nullptr : res + o + r * g.N;
        }
        t.sum = nullptr;
        adafuse::micro_tile_for(n_rows, n_panels)(
            t, segs.data() + ti * per_tile, rows, w + j * g.K * kLanes, g.K * kLanes, bias + j * kLanes, si == 0,
            si + 1 == slices.size(), relu);
      }
    }
  }
}

void conv_rows(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& out,
               const std::optional<at::Tensor>& residual, int64_t kh, int64_t kw, int64_t stride, bool relu,
               bool max_pool, int64_t block_pixels) {
  check_nhwc(x, "x");
  check_nhwc(out, "out");
  const int64_t B = x.size(0), C = x.size(1), Hp = x.size(2), Wp = x.size(3), N = out.size(1);
  TORCH_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && Hp >= kh && Wp >= kw, "bad kernel geometry");
  const int64_t Ho = (Hp - kh) / stride + 1, Wo = (Wp - kw) / stride + 1;
  // With max_pool, out holds the 3x3 / stride 2 / padding 1 max pool of the (ReLU'd) convolution.
  const int64_t Hout = max_pool ? (Ho - 1) / 2 + 1 : Ho, Wout = max_pool ? (Wo - 1) / 2 + 1 : Wo;
  TORCH_CHECK(out.size(0) == B && out.size(2) == Hout && out.size(3) == Wout,
              "out has the wrong size for the padded input");
  TORCH_CHECK(N % kLanes == 0, "C_out must be a multiple of ", kLanes);
  const Geometry g{B, C, Hp, Wp, N, Ho, Wo, kh, kw, stride, kw * C, kh * kw * C};
  TORCH_CHECK(w.is_contiguous() && w.scalar_type() == at::kFloat && w.numel() == g.K * N, "bad packed weight");
  adafuse::check_bias(bias, N);
  TORCH_CHECK(!max_pool || !residual.has_value(), "a residual cannot be added before the max pool");
  const float* res = adafuse::residual_data(residual, out);
  TORCH_CHECK(!max_pool || relu, "the fused max pool follows a ReLU");
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const std::vector<Slice> slices = slices_of(kh, g.row);
  const int64_t HW = Ho * Wo, panels = N / kLanes;

  if (max_pool) {
    // Work items: bands of kPoolRows pooled rows of one sample. A band computes the convolution rows its windows
    // read (2 kPoolRows + 1) into a per-thread buffer, all channels, and pools them: the full-size convolution
    // output is never written. The first of those rows is the last of the band above: when the same thread has
    // just computed it, it is copied instead of computed again (1 row in 17: 6 % of the stem's MACs).
    constexpr int64_t kPoolRows = 8;
    const int64_t n_bands = (Hout + kPoolRows - 1) / kPoolRows;
    at::parallel_for(0, B * n_bands, 1, [&](int64_t begin, int64_t end) {
      std::vector<adafuse::Segment> segs;
      std::vector<float> rows((2 * kPoolRows + 1) * Wo * N);
      int64_t last = -1;  // the convolution row the buffer's last computed row holds (of this thread's last item)
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / n_bands, py0 = item % n_bands * kPoolRows, py1 = std::min(Hout, py0 + kPoolRows);
        const int64_t y0 = std::max<int64_t>(0, 2 * py0 - 1), y1 = std::min(Ho, 2 * py1);
        int64_t from = y0;
        if (item > begin && py0 > 0 && last == y0) {  // the band above, same sample, same thread
          const int64_t prev_y0 = std::max<int64_t>(0, 2 * (py0 - kPoolRows) - 1);
          std::copy_n(rows.data() + (last - prev_y0) * Wo * N, Wo * N, rows.data());
          from = y0 + 1;
        }
        run_block(g, slices, xp, wp, bp, nullptr, rows.data() + (from - y0) * Wo * N, b, from * Wo, y1 * Wo, 0,
                  panels, true, segs);
        last = y1 - 1;
        for (int64_t py = py0; py < py1; ++py)
          for (int64_t px = 0; px < Wout; ++px) {
            float* dst = op + ((b * Hout + py) * Wout + px) * N;
            std::fill(dst, dst + N, 0.f);  // the ReLU'd values are >= 0, and every window holds one of them
            for (int64_t sy = std::max(y0, 2 * py - 1); sy <= std::min(y1 - 1, 2 * py + 1); ++sy)
              for (int64_t sx = std::max<int64_t>(0, 2 * px - 1); sx <= std::min(Wo - 1, 2 * px + 1); ++sx) {
                const float* src = rows.data() + ((sy - y0) * Wo + sx) * N;
                for (int64_t c = 0; c < N; ++c) dst[c] = std::max(dst[c], src[c]);
              }
          }
      }
    });
    return;
  }

  // Work items: (block of about block_pixels pixels of one sample, chunk of output panels whose weights over one
  // slice fill about 256 KiB).
  const int64_t slice_k = (slices[0].r1 - slices[0].r0) * (slices[0].c1 - slices[0].c0);
  const int64_t chunk = adafuse::panel_chunk(slice_k, panels);
  const int64_t n_chunks = (panels + chunk - 1) / chunk;
  const int64_t block = adafuse::block_size(HW, block_pixels);
  const int64_t n_blocks = (HW + block - 1) / block;
  at::parallel_for(0, B * n_blocks * n_chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<adafuse::Segment> segs;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / n_chunks, b = blk / n_blocks;
      const int64_t p0 = blk % n_blocks * block, p1 = std::min(HW, p0 + block);
      const int64_t j0 = item % n_chunks * chunk, j1 = std::min(panels, j0 + chunk);
      const int64_t o = (b * HW + p0) * N;
      run_block(g, slices, xp, wp, bp, res == nullptr ? nullptr : res + o, op + o, b, p0, p1, j0, j1, relu, segs);
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "conv_rows(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? residual, int kernel_h, "
      "int kernel_w, int stride, bool relu, bool max_pool, int block_pixels) -> ()");
  m.impl("conv_rows", c10::DispatchKey::CPU, TORCH_FN(conv_rows));
}
