// Group-sparse convolution on NHWC float32 activations, on ATen's batch-reduce GEMM micro-kernel
// (at::native::cpublas::brgemm, oneDNN's ukernel). Only the chosen output channel groups are computed, only the
// chosen input channel groups enter the reduction, and each input group may be read from another row (frame) of
// the input. Each output group is accumulated in a small per-thread tile and written once, with bias, residual and
// ReLU, into the full-width output (ld = C_out); when every output group is computed, optionally also the mean of
// the output over each sample's pixels (the global average pool the next block's policy reads), from the epilogue.
//
// Weights are packed once (group_conv.py) as (G_out, G_in, taps, group, group): for output group j, input group q
// holds its taps' (group x group) K-major blocks one after the other, so consecutive active input groups are one
// contiguous (K, group) operand (on tiles, below: (C_out / 16, G_in x taps x group, 16) panels).
//
// 1x1: the activation is read in place as a (pixels, C_in) matrix; a run of consecutive input groups read from the
// same row is one GEMM chunk (K = the run's channels; lda = C_in, 2 C_in along a stride-2 row).
// 3x3 (stride 1 or 2): per block of output pixels of one sample, the active input groups are gathered once into a
// (pixels, active groups x 9 taps x group) patch matrix ("im2col" of the active groups only: zeros where a tap
// reads the padding, each group from its own row), which then serves every output group: one GEMM per chunk of
// consecutive active input groups with K = 9 x group x (groups in the chunk), all taps in one reduction. The
// wrapper runs one (A, B) pair per call, so a chunk this long is what keeps the accumulators in registers over
// many multiply-accumulates; the gather costs one copy of the active input per output pixel block, against a
// reduction that reads it (active output channels) times. In an AVX-512 build a 3x3 over groups of 32 (or 64)
// channels reduces its patch matrix on the micro-tile of the dense kernels instead (micro_tile.h: 7 pixels x 32
// channels, one output group, in 14 zmm accumulators; weights packed as 16-channel panels, one segment per active
// input group, so the reduction needs no consecutive groups), with bias, residual, ReLU and the pool's sums in
// the tile's single store: 0.78-0.99 of the brgemm path's time on ResNet-18's shapes at batch 8 (0.91 overall),
// where brgemm runs one short chunk per run of consecutive groups and a separate epilogue pass. A 3x3 on tiles that
// reads every input group of its own row (tap_major: a block's conv1) takes its weights tap-major, (C_out / 16,
// 9 x C_in, 16), and its tiles read the input in place, one segment per tap over all C_in channels: no patch matrix.
// On small blocks (7 x 7 and 14 x 14 maps at batch 1) the tiles also prefetch the next output group's weights.
//
// Registered as torch.ops.adafuse_cpu.group_conv (see adafuse/inference/group_conv.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include "micro_tile.h"
#include "nhwc.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

namespace {

using adafuse::check_nhwc;

struct Run {  // 1x1: input channels [k0, k0 + k) of input row `src`
  int64_t src, k0, k;
};

struct Chunk {  // 3x3: active groups [i0, i1) of a sample's patch columns, input groups q0 .. q0 + (i1 - i0)
  int64_t i0, i1, q0;
};

struct Sample {  // what one sample reads
  std::vector<Run> runs;             // 1x1
  std::vector<int64_t> src, q;       // 3x3: the active input groups (row, group), in group order
  std::vector<Chunk> chunks;         // 3x3: consecutive groups, at most max_chunk groups each
};

struct Geometry {
  int64_t S, C_in, H, W, B, C_out, Ho, Wo, ksize, stride, pad, gs;
};

// 1x1: accumulates output rows [y0, y1) of output group j of one sample into acc ((y1 - y0) * Wo x gs).
void accumulate_1x1(const Geometry& g, const float* x, const float* w, const std::vector<Run>& runs, int64_t j,
                    int64_t y0, int64_t y1, float* acc) {
  const int64_t gs = g.gs;
  if (runs.empty()) {
    std::fill(acc, acc + (y1 - y0) * g.Wo * gs, 0.f);
    return;
  }
  const float* wj = w + j * g.C_in * gs;
  for (size_t ri = 0; ri < runs.size(); ++ri) {
    const Run& r = runs[ri];
    const float* xs = x + r.src * g.H * g.W * g.C_in + r.k0;
    const float* b = wj + r.k0 * gs;
    if (g.stride == 1) {  // output pixel p reads input pixel p: the block is one GEMM
      at::native::cpublas::brgemm((y1 - y0) * g.Wo, gs, r.k, g.C_in, gs, gs, ri > 0, xs + y0 * g.W * g.C_in, b,
                                  acc);
    } else {
      for (int64_t y = y0; y < y1; ++y)
        at::native::cpublas::brgemm(g.Wo, gs, r.k, g.stride * g.C_in, gs, gs, ri > 0,
                                    xs + y * g.stride * g.W * g.C_in, b, acc + (y - y0) * g.Wo * gs);
    }
  }
}

// Copies (or zeroes) one group of channels; GS > 0 is the group size known at compile time (the sizes policies use:
// the copy becomes a few vector moves), 0 the general case.
template <int64_t GS>
inline void copy_group(float* dst, const float* src, int64_t gs) {
  const int64_t n = GS > 0 ? GS : gs;
  if (src == nullptr)
    std::memset(dst, 0, n * sizeof(float));
  else
    std::memcpy(dst, src, n * sizeof(float));
}

// 3x3: the patch matrix of output rows [y0, y1) of one sample: row p, columns (active group i, tap, channel). Per
// (output row, kernel row, group), the three taps of a pixel are three groups of one input row; pixels whose taps
// are all inside the input (all but the edges) copy them without bounds checks.
template <int64_t GS>
void gather_patches(const Geometry& g, const float* x, const Sample& s, int64_t y0, int64_t y1, float* a) {
  const int64_t gs = GS > 0 ? GS : g.gs, n = static_cast<int64_t>(s.q.size()), kp = n * 9 * gs, C = g.C_in;
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t dy = 0; dy < 3; ++dy) {
      const int64_t iy = y * g.stride + dy - g.pad;
      const bool row_inside = iy >= 0 && iy < g.H;
      for (int64_t i = 0; i < n; ++i) {
        const float* src = row_inside ? x + (s.src[i] * g.H + iy) * g.W * C + s.q[i] * gs : nullptr;
        float* dst = a + (y - y0) * g.Wo * kp + (i * 9 + dy * 3) * gs;
        for (int64_t xo = 0; xo < g.Wo; ++xo, dst += kp) {
          const int64_t ix = xo * g.stride - g.pad;
          if (src != nullptr && ix >= 0 && ix + 2 < g.W) {
            const float* p = src + ix * C;
            copy_group<GS>(dst, p, gs);
            copy_group<GS>(dst + gs, p + C, gs);
            copy_group<GS>(dst + 2 * gs, p + 2 * C, gs);
          } else {
            for (int64_t dx = 0; dx < 3; ++dx) {
              const bool inside = src != nullptr && ix + dx >= 0 && ix + dx < g.W;
              copy_group<GS>(dst + dx * gs, inside ? src + (ix + dx) * C : nullptr, gs);
            }
          }
        }
      }
    }
}

void gather(const Geometry& g, const float* x, const Sample& s, int64_t y0, int64_t y1, float* a) {
  switch (g.gs) {
    case 8: return gather_patches<8>(g, x, s, y0, y1, a);
    case 16: return gather_patches<16>(g, x, s, y0, y1, a);
    case 32: return gather_patches<32>(g, x, s, y0, y1, a);
    case 64: return gather_patches<64>(g, x, s, y0, y1, a);
    default: return gather_patches<0>(g, x, s, y0, y1, a);
  }
}

// 3x3: output group j of a block of m pixels from its patch matrix a.
void accumulate_3x3(const Geometry& g, const float* a, const float* w, const Sample& s, int64_t j, int64_t m,
                    float* acc) {
  const int64_t gs = g.gs, G_in = g.C_in / gs, kp = static_cast<int64_t>(s.q.size()) * 9 * gs;
  if (s.chunks.empty()) {
    std::fill(acc, acc + m * gs, 0.f);
    return;
  }
  for (size_t ci = 0; ci < s.chunks.size(); ++ci) {
    const Chunk& c = s.chunks[ci];
    const float* b = w + (j * G_in + c.q0) * 9 * gs * gs;
    at::native::cpublas::brgemm(m, gs, (c.i1 - c.i0) * 9 * gs, kp, gs, gs, ci > 0, a + c.i0 * 9 * gs, b, acc);
  }
}

// out[pixels of rows y0..y1, group j] = act(acc + bias (+ residual)); with sum, the group's channel sums over these
// pixels are added to sum[0 .. group) (the global average pool); GS as in copy_group.
template <int64_t GS>
void epilogue_n(const Geometry& g, const float* acc, const float* bias, const float* res, bool relu, float* out,
                float* sum, int64_t y0, int64_t y1) {
  const int64_t gs = GS > 0 ? GS : g.gs;
  float total[GS > 0 ? GS : 64] = {};
  for (int64_t p = 0, n = (y1 - y0) * g.Wo; p < n; ++p) {
    const int64_t o = (y0 * g.Wo + p) * g.C_out;
    const float* a = acc + p * gs;
    float* dst = out + o;
    float v[GS > 0 ? GS : 64];
    for (int64_t c = 0; c < gs; ++c) v[c] = a[c] + bias[c];
    if (res != nullptr)
      for (int64_t c = 0; c < gs; ++c) v[c] += res[o + c];
    if (relu)
      for (int64_t c = 0; c < gs; ++c) v[c] = v[c] < 0.f ? 0.f : v[c];
    for (int64_t c = 0; c < gs; ++c) dst[c] = v[c];
    if (sum != nullptr)
      for (int64_t c = 0; c < gs; ++c) total[c] += v[c];
  }
  if (sum != nullptr)
    for (int64_t c = 0; c < gs; ++c) sum[c] += total[c];
}

void epilogue(const Geometry& g, const float* acc, const float* bias, const float* res, bool relu, float* out,
              float* sum, int64_t y0, int64_t y1) {
  switch (g.gs) {
    case 8: return epilogue_n<8>(g, acc, bias, res, relu, out, sum, y0, y1);
    case 16: return epilogue_n<16>(g, acc, bias, res, relu, out, sum, y0, y1);
    case 32: return epilogue_n<32>(g, acc, bias, res, relu, out, sum, y0, y1);
    case 64: return epilogue_n<64>(g, acc, bias, res, relu, out, sum, y0, y1);
    default: return epilogue_n<0>(g, acc, bias, res, relu, out, sum, y0, y1);
  }
}

// The longest chunk of input groups a 3x3 GEMM reduces over: about 512 K rows, so that the chunk's packed weights
// (K x group floats) stay in the L1/L2 cache while the micro-kernel sweeps the block's pixels.
int64_t max_chunk(int64_t gs) { return std::max<int64_t>(1, 512 / (9 * gs)); }

constexpr int64_t kTileLanes = adafuse::kTilePanels * adafuse::kLanes;  // output channels of one micro-tile

// Whether a conv reduces on the micro-tile (micro_tile.h, weights packed as 16-channel panels) rather than on
// brgemm (weights packed per group): a 3x3 whose groups are whole 32-channel tiles, i.e. an AVX-512 build.
bool on_tiles(int64_t ksize, int64_t gs) { return ksize == 3 && kTileLanes == 32 && gs % kTileLanes == 0; }

// 3x3 on tiles: the segments of the patch matrix a of m pixels, n per tile of kRows pixels (returns n): active
// group i's 9 taps x group values of each pixel against panel rows [q x 9 x group, (q + 1) x 9 x group), q its group.
int64_t patch_segments(const Geometry& g, const float* a, const Sample& s, int64_t m,
                       std::vector<adafuse::Segment>& segs) {
  using adafuse::kRows;
  const int64_t n = static_cast<int64_t>(s.q.size()), kp = n * 9 * g.gs, n_tiles = (m + kRows - 1) / kRows;
  segs.resize(n * n_tiles);
  for (int64_t ti = 0; ti < n_tiles; ++ti)
    for (int64_t i = 0; i < n; ++i) {
      adafuse::Segment& seg = segs[ti * n + i];
      for (int64_t r = 0; r < kRows; ++r) seg.a[r] = a + std::min(ti * kRows + r, m - 1) * kp + i * 9 * g.gs;
      seg.w = s.q[i] * 9 * g.gs * adafuse::kLanes;
      seg.n = 9 * g.gs;
    }
  return n;
}

// 3x3 on tiles with tap-major weights ((C_out / 16, 9 x C_in, 16) panels), read in place (no patch matrix): the
// segments of output pixels [p0, p0 + m) of one sample (p0 the first pixel of output row y0), n = 9 x runs per tile
// of kRows pixels (returns n): for each tap, each run of consecutive input groups from one row is one segment of its
// channels, read where they are in x (zeros where the tap reads the padding), against panel rows tap x C_in + its
// first channel. A conv that reads every input group of its own row (a block's conv1) has one run: 9 segments of C_in
// steps per tile, and no copy of its input: 0.72-0.93 of the gather's time on ResNet-18's conv1 shapes at batch 1.
int64_t direct_segments(const Geometry& g, const float* x, const std::vector<Run>& runs, int64_t y0, int64_t m,
                        const float* zeros, std::vector<adafuse::Segment>& segs) {
  using adafuse::kRows;
  const int64_t n = 9 * static_cast<int64_t>(runs.size()), n_tiles = (m + kRows - 1) / kRows, C = g.C_in;
  segs.resize(n * n_tiles);
  for (int64_t ti = 0; ti < n_tiles; ++ti) {
    int64_t iy[kRows], ix[kRows];  // the top-left input pixel of each output pixel's window
    for (int64_t r = 0; r < kRows; ++r) {
      const int64_t p = y0 * g.Wo + ti * kRows + std::min(r, m - 1 - ti * kRows);
      iy[r] = p / g.Wo * g.stride - g.pad;
      ix[r] = p % g.Wo * g.stride - g.pad;
    }
    adafuse::Segment* seg = segs.data() + ti * n;
    for (int64_t tap = 0; tap < 9; ++tap) {
      const int64_t dy = tap / 3, dx = tap % 3;
      for (const Run& run : runs) {
        for (int64_t r = 0; r < kRows; ++r) {
          const int64_t yy = iy[r] + dy, xx = ix[r] + dx;
          const bool inside = yy >= 0 && yy < g.H && xx >= 0 && xx < g.W;
          seg->a[r] = inside ? x + ((run.src * g.H + yy) * g.W + xx) * C + run.k0 : zeros;
        }
        seg->w = (tap * C + run.k0) * adafuse::kLanes;
        seg->n = run.k;
        ++seg;
      }
    }
  }
  return n;
}

// Blocks of fewer output pixels (7 x 7 and 14 x 14 maps at batch 1) prefetch the next output group's weights while
// they reduce: each weight serves so few pixels that its first read, from memory, is not hidden behind arithmetic.
constexpr int64_t kPrefetchPixels = 256;

// 3x3 on tiles: output group j of m pixels from their segments (n per tile), written to out (pixel p at
// out + p * C_out) with bias, residual (res, same layout, or nullptr) and ReLU; its channel sums are added to sum
// (or nullptr). The whole reduction stays in the tile's registers: no accumulator buffer, no epilogue pass. On
// small blocks the tiles prefetch the weights of the next 32 output channels (of group j, or of group next_j when
// j has no more; -1: none) into L2 during their segments: tile i takes part i / 2 of panel i % 2 of each segment's
// rows, so that the next channels' weights arrive spread over the block's tiles.
void tiles_3x3(const Geometry& g, std::vector<adafuse::Segment>& segs, int64_t n, const float* w, int64_t j,
               int64_t next_j, int64_t m, const float* bias, const float* res, bool relu, float* out, float* sum) {
  using adafuse::kLanes;
  using adafuse::kRows;
  const int64_t K = g.C_in * 9;  // rows of a weight panel
  const int64_t n_tiles = (m + kRows - 1) / kRows;
  const bool prefetch = m < kPrefetchPixels && n_tiles >= 2;
  for (int64_t h = 0; h < g.gs; h += kTileLanes) {
    const int64_t c = j * g.gs + h;
    const int64_t c_next = h + kTileLanes < g.gs ? c + kTileLanes : next_j < 0 ? -1 : next_j * g.gs;
    const float* next = prefetch && c_next >= 0 ? w + c_next / kLanes * K * kLanes : nullptr;
    for (int64_t p = 0, ti = 0; p < m; p += kRows, ++ti) {
      const int64_t rows = std::min(kRows, m - p);
      adafuse::Tile t;
      for (int64_t r = 0; r < rows; ++r) {
        t.c[r] = out + (p + r) * g.C_out + c;
        t.r[r] = res == nullptr ? nullptr : res + (p + r) * g.C_out + c;
      }
      t.sum = sum == nullptr ? nullptr : sum + h;
      adafuse::Segment* ts = segs.data() + ti * n;
      const int64_t panel = ti % 2, parts = (n_tiles + 1 - panel) / 2, part = ti / 2;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t lo = ts[i].n * part / parts, hi = ts[i].n * (part + 1) / parts;
        ts[i].pf = next == nullptr ? nullptr : next + panel * K * kLanes + ts[i].w + lo * kLanes;
        ts[i].pf_lines = next == nullptr ? 0 : hi - lo;
      }
      adafuse::micro_tile_for(rows, adafuse::kTilePanels)(t, ts, n, w + c / kLanes * K * kLanes, K * kLanes,
                                                          bias + c, true, true, relu);
    }
  }
}

void forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& out,
             const std::optional<at::Tensor>& out_groups, const std::optional<at::Tensor>& in_source,
             const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& mean, int64_t ksize,
             int64_t stride, int64_t pad, int64_t gs, bool relu, bool tap_major, int64_t tile_pixels) {
  check_nhwc(x, "x");
  check_nhwc(out, "out");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), out.size(0), out.size(1), out.size(2), out.size(3),
             ksize, stride, pad, gs};
  TORCH_CHECK(gs >= 1 && gs <= 64 && g.C_in % gs == 0 && g.C_out % gs == 0, "bad group size ", gs);
  TORCH_CHECK((ksize == 1 || ksize == 3) && pad == ksize / 2 && (stride == 1 || stride == 2), "bad kernel geometry");
  TORCH_CHECK(g.Ho == (g.H + 2 * pad - ksize) / stride + 1 && g.Wo == (g.W + 2 * pad - ksize) / stride + 1,
              "out has the wrong spatial size");
  const int64_t G_in = g.C_in / gs, G_out = g.C_out / gs, taps = ksize * ksize;
  TORCH_CHECK(w.is_contiguous() && w.scalar_type() == at::kFloat && w.numel() == G_out * G_in * taps * gs * gs,
              "packed weight has the wrong size");
  adafuse::check_bias(bias, g.C_out);
  const float* res = adafuse::residual_data(residual, out);
  TORCH_CHECK(!tap_major || (on_tiles(ksize, gs) && !in_source.has_value()),
              "tap-major weights are for a 3x3 on tiles that reads every input group of its own row (no in_source)");

  // What each sample reads: the row of every input group (-1: skipped).
  std::vector<int64_t> rows(g.B * G_in);
  if (in_source.has_value()) {
    const at::Tensor src = in_source->contiguous();
    TORCH_CHECK(src.scalar_type() == at::kLong && src.dim() == 2 && src.size(0) == g.B && src.size(1) == G_in,
                "in_source must be int64 (B, C_in / group_size)");
    const int64_t* s = src.data_ptr<int64_t>();
    for (int64_t i = 0; i < g.B * G_in; ++i) {
      TORCH_CHECK(s[i] >= -1 && s[i] < g.S, "in_source[", i / G_in, ", ", i % G_in, "] = ", s[i],
                  " is not a row of x or -1");
      rows[i] = s[i];
    }
  } else {
    TORCH_CHECK(g.B <= g.S, "without in_source, sample b reads row b of x: x has fewer rows than out");
    for (int64_t b = 0; b < g.B; ++b)
      for (int64_t q = 0; q < G_in; ++q) rows[b * G_in + q] = b;
  }
  std::vector<Sample> samples(g.B);
  const int64_t longest = max_chunk(gs);
  int64_t widest = 0;  // the most active input groups of a sample
  for (int64_t b = 0; b < g.B; ++b) {
    Sample& s = samples[b];
    for (int64_t q = 0; q < G_in; ++q) {
      const int64_t row = rows[b * G_in + q];
      if (row < 0) continue;
      if (ksize == 1 || tap_major) {  // consecutive groups from the same row merge into one K run
        if (!s.runs.empty() && s.runs.back().src == row && s.runs.back().k0 + s.runs.back().k == q * gs)
          s.runs.back().k += gs;
        else
          s.runs.push_back({row, q * gs, gs});
      } else {  // 3x3: consecutive groups (from any rows: the gather puts them side by side) share a chunk
        const int64_t i = static_cast<int64_t>(s.q.size());
        if (!s.chunks.empty() && s.chunks.back().q0 + (i - s.chunks.back().i0) == q &&
            i - s.chunks.back().i0 < longest)
          s.chunks.back().i1 = i + 1;
        else
          s.chunks.push_back({i, i + 1, q});
        s.src.push_back(row);
        s.q.push_back(q);
      }
    }
    widest = std::max<int64_t>(widest, static_cast<int64_t>(s.q.size()));
  }

  if (mean.has_value()) {
    TORCH_CHECK(!out_groups.has_value(), "mean needs every output group computed (out_groups None)");
    adafuse::check_mean(*mean, g.B, g.C_out);
  }
  std::vector<uint8_t> active(g.B * G_out, 1);
  if (out_groups.has_value()) {
    const at::Tensor og = out_groups->contiguous();
    TORCH_CHECK(og.scalar_type() == at::kBool && og.dim() == 2 && og.size(0) == g.B && og.size(1) == G_out,
                "out_groups must be bool (B, C_out / group_size)");
    const bool* m = og.data_ptr<bool>();
    for (int64_t i = 0; i < g.B * G_out; ++i) active[i] = m[i];
  }
  std::vector<int64_t> next_active(g.B * G_out, -1);  // per (sample, group): its next computed group, or -1
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t j = G_out - 1, next = -1; j >= 0; --j) {
      next_active[b * G_out + j] = next;
      if (active[b * G_out + j]) next = j;
    }

  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t per_sample = g.Ho * g.Wo * g.C_out;

  if (ksize == 1) {
    // Work items (sample, block of output rows, output group). Threads take contiguous ranges of items, so the
    // order decides what stays in cache: with the output group fastest, a block's input rows serve every group
    // while each item streams its group's weights; with the sample fastest, a group's weights serve every sample
    // while each item streams its input rows. Each item streams the smaller of the two, with a bias towards
    // keeping the input rows (measured on 7² to 14² maps at batch 8).
    const int64_t block = std::clamp<int64_t>(tile_pixels / std::max<int64_t>(g.Wo, 1), 1, g.Ho);
    const int64_t n_tiles = (g.Ho + block - 1) / block;
    const bool group_fastest = g.C_in * gs <= 2 * std::min(g.H, block * stride) * g.W * g.C_in;
    // The pool: each (sample, block of rows) sums into its own row; its items write disjoint groups of it.
    std::vector<float> sums(mean.has_value() ? g.B * n_tiles * g.C_out : 0, 0.f);
    struct Item {
      int64_t b, t, j;
    };
    std::vector<Item> items;
    items.reserve(g.B * n_tiles * G_out);
    if (group_fastest) {
      for (int64_t b = 0; b < g.B; ++b)
        for (int64_t t = 0; t < n_tiles; ++t)
          for (int64_t j = 0; j < G_out; ++j)
            if (active[b * G_out + j]) items.push_back({b, t, j});
    } else {
      for (int64_t j = 0; j < G_out; ++j)
        for (int64_t t = 0; t < n_tiles; ++t)
          for (int64_t b = 0; b < g.B; ++b)
            if (active[b * G_out + j]) items.push_back({b, t, j});
    }
    at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(block * g.Wo * gs);
      for (int64_t i = begin; i < end; ++i) {
        const auto [b, t, j] = items[i];
        const int64_t y0 = t * block, y1 = std::min(g.Ho, y0 + block);
        accumulate_1x1(g, xp, wp, samples[b].runs, j, y0, y1, acc.data());
        float* sum = sums.empty() ? nullptr : sums.data() + (b * n_tiles + t) * g.C_out + j * gs;
        epilogue(g, acc.data(), bp + j * gs, res == nullptr ? nullptr : res + b * per_sample + j * gs, relu,
                 op + b * per_sample + j * gs, sum, y0, y1);
      }
      at::native::cpublas::brgemm_release(/*is_vnni=*/false);
    });
    if (mean.has_value())
      adafuse::mean_of_block_sums(sums, g.B, n_tiles, g.C_out, g.Ho * g.Wo, mean->data_ptr<float>());
    return;
  }

  // 3x3: work items (sample, block of output rows, range of output groups); a block's patch matrix is gathered
  // once per item and serves the item's output groups. Blocks hold about tile_pixels pixels, fewer when the patch
  // matrix would pass 2 MiB (deep layers: many input channels); output groups are split into ranges only when
  // there are too few blocks for the threads.
  const int64_t kp_max = std::max<int64_t>(widest, 1) * 9 * gs;
  const int64_t pixels = std::clamp<int64_t>((int64_t{1} << 19) / kp_max, 1, tile_pixels);
  const int64_t block = std::clamp<int64_t>(pixels / std::max<int64_t>(g.Wo, 1), 1, g.Ho);
  const int64_t n_tiles = (g.Ho + block - 1) / block;
  const int64_t threads = at::get_num_threads();
  const int64_t n_ranges = std::clamp<int64_t>((2 * threads + g.B * n_tiles - 1) / (g.B * n_tiles), 1, G_out);
  const int64_t per_range = (G_out + n_ranges - 1) / n_ranges;
  const int64_t n_items = g.B * n_tiles * n_ranges;
  const bool tiles = on_tiles(ksize, gs);
  const std::vector<float> zeros(tap_major ? g.C_in : 0, 0.f);  // what a tap reads in the padding
  std::vector<float> sums(mean.has_value() ? g.B * n_tiles * g.C_out : 0, 0.f);  // as for the 1x1
  at::parallel_for(0, n_items, 1, [&](int64_t begin, int64_t end) {
    // uninitialised: the gather writes every value the reduction reads (zeroing a 2 MiB matrix cost ~0.1 ms a call)
    const std::unique_ptr<float[]> a(tap_major ? nullptr : new float[block * g.Wo * kp_max]);
    std::vector<float> acc(tiles ? 0 : block * g.Wo * gs);
    std::vector<adafuse::Segment> segs;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (n_tiles * n_ranges), t = i / n_ranges % n_tiles, r = i % n_ranges;
      const int64_t y0 = t * block, y1 = std::min(g.Ho, y0 + block), m = (y1 - y0) * g.Wo;
      const int64_t j0 = r * per_range, j1 = std::min(G_out, j0 + per_range);
      bool any = false;
      for (int64_t j = j0; j < j1; ++j) any = any || active[b * G_out + j];
      if (!any) continue;
      const Sample& s = samples[b];
      int64_t per_tile = 0;  // segments per micro-tile (on tiles)
      if (tap_major) {
        per_tile = direct_segments(g, xp, s.runs, y0, m, zeros.data(), segs);
      } else {
        gather(g, xp, s, y0, y1, a.get());
        if (tiles) per_tile = patch_segments(g, a.get(), s, m, segs);
      }
      for (int64_t j = j0; j < j1; ++j) {
        if (!active[b * G_out + j]) continue;
        float* sum = sums.empty() ? nullptr : sums.data() + (b * n_tiles + t) * g.C_out + j * gs;
        const int64_t o = b * per_sample + y0 * g.Wo * g.C_out;  // pixel (b, y0, 0)
        if (tiles) {
          tiles_3x3(g, segs, per_tile, wp, j, next_active[b * G_out + j], m, bp, res == nullptr ? nullptr : res + o,
                    relu, op + o, sum);
          continue;
        }
        accumulate_3x3(g, a.get(), wp, s, j, m, acc.data());
        epilogue(g, acc.data(), bp + j * gs, res == nullptr ? nullptr : res + b * per_sample + j * gs, relu,
                 op + b * per_sample + j * gs, sum, y0, y1);
      }
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
  if (mean.has_value())
    adafuse::mean_of_block_sums(sums, g.B, n_tiles, g.C_out, g.Ho * g.Wo, mean->data_ptr<float>());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "group_conv(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? out_groups, Tensor? in_source, "
      "Tensor? residual, Tensor(b!)? mean, int kernel_size, int stride, int padding, int group_size, bool relu, "
      "bool tap_major, int tile_pixels) -> ()");
  m.impl("group_conv", c10::DispatchKey::CPU, TORCH_FN(forward));
  m.def("group_conv_on_tiles(int kernel_size, int group_size) -> bool", TORCH_FN(on_tiles));
}
