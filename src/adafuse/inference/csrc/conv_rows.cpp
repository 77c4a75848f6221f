// Dense k x k convolution on a float32 input in any memory layout, on the micro-tile kernel (micro_tile.h):
// out (P, N) = act(conv(x) + bias (+ residual)), any stride and kernel size; optionally followed by a ResNet
// stem's 3 x 3 / stride 2 / padding 1 max pool, fused (max_pool).
//
// Each work item first copies the input rows it reads into a zero-padded NHWC buffer; then the kw taps of one
// kernel row read kw x C_in consecutive floats of it (pixels ix .. ix + kw - 1, all channels), and the weights,
// packed once as (N / 16, kh, kw, C_in, 16) panels, hold the matching rows in the same order: each kernel row of a
// pixel is one contiguous segment of the reduction, with no bounds checks. A ResNet stem (7 x 7, 3 channels) is 7 segments of 21 values. The reduction
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
  int64_t B, C, H, W, ph, pw, Hp, Wp, N, Ho, Wo, kh, kw, stride, row, K;
  int64_t sb, sc, sy, sx;  // the input's strides (any memory layout)
};

// Padded rows [r0, r1) of sample b (row r of the zero-padded image is input row r - ph), NHWC, into dst
// ((r1 - r0) x Wp x C floats). The kernel pads per work item, so that the padded copy of a clip (5 MB at 224 px,
// written and read back once) never exists: each item's rows are copied into a per-thread buffer it then reads
// from its cache.
void pad_rows(const Geometry& g, const float* x, int64_t b, int64_t r0, int64_t r1, float* dst) {
  const int64_t line = g.Wp * g.C;
  for (int64_t r = r0; r < r1; ++r, dst += line) {
    const int64_t iy = r - g.ph;
    if (iy < 0 || iy >= g.H) {
      std::fill(dst, dst + line, 0.f);
      continue;
    }
    std::fill(dst, dst + g.pw * g.C, 0.f);
    std::fill(dst + (g.pw + g.W) * g.C, dst + line, 0.f);
    const float* src = x + b * g.sb + iy * g.sy;
    float* d = dst + g.pw * g.C;
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t ix = 0; ix < g.W; ++ix) d[ix * g.C + c] = src[c * g.sc + ix * g.sx];
  }
}

// The running maximum of 16 channels over a pool window, from 0, in vector registers (GCC leaves the plain loop
// as 16 scalar maxima: the pool then took a fifth of the stem's time).
struct Max16 {
#if defined(__AVX512F__)
  __m512 v = _mm512_setzero_ps();
  void add(const float* x) { v = _mm512_max_ps(v, _mm512_loadu_ps(x)); }
  void store(float* dst) const { _mm512_storeu_ps(dst, v); }
#elif defined(__AVX2__) && defined(__FMA__)  // the condition under which micro_tile.h includes the intrinsics
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  void add(const float* x) {
    lo = _mm256_max_ps(lo, _mm256_loadu_ps(x));
    hi = _mm256_max_ps(hi, _mm256_loadu_ps(x + 8));
  }
  void store(float* dst) const {
    _mm256_storeu_ps(dst, lo);
    _mm256_storeu_ps(dst + 8, hi);
  }
#else
  float v[kLanes] = {};
  void add(const float* x) {
    for (int64_t l = 0; l < kLanes; ++l) v[l] = std::max(v[l], x[l]);
  }
  void store(float* dst) const { std::copy_n(v, kLanes, dst); }
#endif
};

// The padded input rows output rows [y0, y1) read.
inline int64_t first_row(const Geometry& g, int64_t y0) { return y0 * g.stride; }
inline int64_t end_row(const Geometry& g, int64_t y1) { return (y1 - 1) * g.stride + g.kh; }

// Output pixels [p0, p1) (pixels of the convolution's output, row-major) from the padded rows in xw (starting at
// padded row r0), output panels [j0, j1), written to dst + (p - p0) * N (+ residual, when given, at the same
// offset of res) after ReLU when asked.
void run_block(const Geometry& g, const std::vector<Slice>& slices, const float* xw, int64_t r0, const float* w,
               const float* bias, const float* res, float* dst, int64_t p0, int64_t p1, int64_t j0, int64_t j1,
               bool relu, std::vector<adafuse::Segment>& segs) {
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
        at[r] = xw + ((y - r0) * g.Wp + xo) * g.C;
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
               const std::optional<at::Tensor>& residual, int64_t kh, int64_t kw, int64_t stride, int64_t pad_h,
               int64_t pad_w, bool relu, bool max_pool, int64_t block_pixels) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "x must be a 4-d float32 CPU tensor");
  check_nhwc(out, "out");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = out.size(1);
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  TORCH_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && pad_h >= 0 && pad_w >= 0 && Hp >= kh && Wp >= kw,
              "bad kernel geometry");
  const int64_t Ho = (Hp - kh) / stride + 1, Wo = (Wp - kw) / stride + 1;
  // With max_pool, out holds the 3x3 / stride 2 / padding 1 max pool of the (ReLU'd) convolution.
  const int64_t Hout = max_pool ? (Ho - 1) / 2 + 1 : Ho, Wout = max_pool ? (Wo - 1) / 2 + 1 : Wo;
  TORCH_CHECK(out.size(0) == B && out.size(2) == Hout && out.size(3) == Wout, "out has the wrong size");
  TORCH_CHECK(N % kLanes == 0, "C_out must be a multiple of ", kLanes);
  const Geometry g{B, C, H, W, pad_h, pad_w, Hp, Wp, N, Ho, Wo, kh, kw, stride, kw * C, kh * kw * C,
                   x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
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
      std::vector<float> xw((2 * kPoolRows * stride + kh) * Wp * C);  // the padded input rows of a band
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
        if (from < y1) {
          const int64_t r0 = first_row(g, from);
          pad_rows(g, xp, b, r0, end_row(g, y1), xw.data());
          run_block(g, slices, xw.data(), r0, wp, bp, nullptr, rows.data() + (from - y0) * Wo * N, from * Wo,
                    y1 * Wo, 0, panels, true, segs);
        }
        last = y1 - 1;
        for (int64_t py = py0; py < py1; ++py)
          for (int64_t px = 0; px < Wout; ++px)
            for (int64_t c = 0; c < N; c += kLanes) {
              Max16 m;  // the ReLU'd values are >= 0, and every window holds one of them
              for (int64_t sy = std::max(y0, 2 * py - 1); sy <= std::min(y1 - 1, 2 * py + 1); ++sy)
                for (int64_t sx = std::max<int64_t>(0, 2 * px - 1); sx <= std::min(Wo - 1, 2 * px + 1); ++sx)
                  m.add(rows.data() + ((sy - y0) * Wo + sx) * N + c);
              m.store(op + ((b * Hout + py) * Wout + px) * N + c);
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
    std::vector<float> xw;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / n_chunks, b = blk / n_blocks;
      const int64_t p0 = blk % n_blocks * block, p1 = std::min(HW, p0 + block);
      const int64_t j0 = item % n_chunks * chunk, j1 = std::min(panels, j0 + chunk);
      const int64_t o = (b * HW + p0) * N;
      const int64_t r0 = first_row(g, p0 / Wo), r1 = end_row(g, (p1 - 1) / Wo + 1);
      xw.resize((r1 - r0) * Wp * C);
      pad_rows(g, xp, b, r0, r1, xw.data());
      run_block(g, slices, xw.data(), r0, wp, bp, res == nullptr ? nullptr : res + o, op + o, p0, p1, j0, j1, relu,
                segs);
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "conv_rows(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? residual, int kernel_h, "
      "int kernel_w, int stride, int pad_h, int pad_w, bool relu, bool max_pool, int block_pixels) -> ()");
  m.impl("conv_rows", c10::DispatchKey::CPU, TORCH_FN(conv_rows));
}
