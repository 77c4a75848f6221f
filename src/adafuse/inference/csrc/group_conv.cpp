// Group-sparse convolution on NHWC float32 activations, on ATen's batch-reduce GEMM micro-kernel
// (at::native::cpublas::brgemm, oneDNN's ukernel). Only the chosen output channel groups are computed, only the
// chosen input channel groups enter the reduction, and each input group may be read from another row (frame) of
// the input. Nothing is copied: a run of consecutive input groups read from the same row is one GEMM chunk
// (K = the run's channels) on the activation viewed in place as a (pixels, C_in) matrix; each output group is
// accumulated in a small per-thread tile and written once, with bias, residual and ReLU, into the full-width
// output (ld = C_out).
//
// Spatial taps: a stride-1 convolution whose output has the input's width ("same" padding) runs each tap as ONE
// GEMM over the flattened pixels of a block of output rows (the input pixel of output pixel p is p + a constant
// shift). Across a row end that shift wraps to the neighbouring row's edge pixel instead of the zero padding; the
// wrapped values only ever land in the columns a tap may not touch (x < pad for a left tap, ...), so every
// horizontal tap offset accumulates into its own tile and the epilogue adds each tile over its valid columns only.
// Other convolutions (stride 2) run one GEMM per output row and tap.
//
// Registered as torch.ops.adafuse_group_conv.forward (see adafuse/inference/group_conv.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

namespace {

struct Run {  // input channels [k0, k0 + k) of input row `src`
  int64_t src, k0, k;
};

struct Geometry {
  int64_t S, C_in, H, W, B, C_out, Ho, Wo, ksize, stride, pad, gs;
  bool flat;  // one GEMM per tap over a block of rows (see the file comment)
  int64_t n_acc;  // accumulation tiles: one per horizontal tap offset when flat, else 1
};

// Output positions [lo, hi) along one axis whose input position o * stride + tap - pad lies in [0, size).
inline void valid_range(int64_t size, int64_t out_size, int64_t tap, const Geometry& g, int64_t& lo, int64_t& hi) {
  const int64_t shift = tap - g.pad;  // input = o * stride + shift
  lo = shift >= 0 ? 0 : (-shift + g.stride - 1) / g.stride;
  hi = size - 1 - shift < 0 ? 0 : std::min(out_size, (size - 1 - shift) / g.stride + 1);
}

// Accumulates the output tile of rows [y0, y1), output group j, of one sample (its runs) into acc: n_acc tiles of
// (y1 - y0) * Wo rows by gs columns. The centre tap (dy, dx) = (pad, pad) of the first run touches every pixel a
// tile's epilogue reads (the centre row of a flat tap block covers every column its tile keeps), so it writes
// instead of adding and no tile needs zeroing first, unless there is no run at all.
void accumulate(const Geometry& g, const float* x, const float* w, const std::vector<Run>& runs, int64_t j, int64_t y0,
                int64_t y1, float* acc) {
  const int64_t gs = g.gs, tile = (y1 - y0) * g.Wo * gs, taps = g.ksize * g.ksize;
  if (runs.empty()) {
    std::fill(acc, acc + g.n_acc * tile, 0.f);
    return;
  }
  const float* wj = w + j * taps * g.C_in * gs;  // packed (taps, C_in, gs) block of output group j
  for (size_t ri = 0; ri < runs.size(); ++ri) {
    const Run& r = runs[ri];
    const float* xs = x + r.src * g.H * g.W * g.C_in + r.k0;
    for (int64_t i = 0; i < g.ksize; ++i) {
      const int64_t dy = (i + g.pad) % g.ksize;  // the centre row of taps first
      int64_t ya, yb;
      valid_range(g.H, g.Ho, dy, g, ya, yb);
      ya = std::max(ya, y0);
      yb = std::min(yb, y1);
      if (ya >= yb) continue;
      for (int64_t jx = 0; jx < g.ksize; ++jx) {
        const int64_t dx = (jx + g.pad) % g.ksize;
        int64_t xa, xb;
        valid_range(g.W, g.Wo, dx, g, xa, xb);
        if (xa >= xb) continue;
        // Flat: each dx has its own tile, first written by its centre-row tap; else one tile, by the centre tap.
        const bool add = ri > 0 || dy != g.pad || (!g.flat && dx != g.pad);
        const float* b = wj + ((dy * g.ksize + dx) * g.C_in + r.k0) * gs;
        if (g.flat) {  // pixels (ya, xa) .. (yb - 1, xb - 1) as one block; input pixel = output pixel + shift
          const int64_t first = (ya - y0) * g.Wo + xa, m = (yb - 1 - ya) * g.Wo + (xb - xa);
          const int64_t in = (ya + dy - g.pad) * g.W + (xa + dx - g.pad);
          at::native::cpublas::brgemm(m, gs, r.k, g.C_in, gs, gs, add, xs + in * g.C_in, b,
                                      acc + dx * tile + first * gs);
        } else {
          for (int64_t y = ya; y < yb; ++y) {
            const int64_t first = (y - y0) * g.Wo + xa;
            const int64_t in = (y * g.stride + dy - g.pad) * g.W + (xa * g.stride + dx - g.pad);
            at::native::cpublas::brgemm(xb - xa, gs, r.k, g.stride * g.C_in, gs, gs, add, xs + in * g.C_in, b,
                                        acc + first * gs);
          }
        }
      }
    }
  }
}

// out[pixels of rows y0..y1, group j] = act(sum of the tiles over their valid columns + bias (+ residual)).
void epilogue(const Geometry& g, const float* acc, const float* bias, const float* res, bool relu, float* out,
              int64_t y0, int64_t y1) {
  const int64_t gs = g.gs, tile = (y1 - y0) * g.Wo * gs;
  int64_t lo[3] = {0, 0, 0}, hi[3] = {g.Wo, g.Wo, g.Wo};
  if (g.flat)
    for (int64_t d = 0; d < g.n_acc; ++d) valid_range(g.W, g.Wo, d, g, lo[d], hi[d]);
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t xo = 0; xo < g.Wo; ++xo) {
      const int64_t p = (y - y0) * g.Wo + xo, o = (y * g.Wo + xo) * g.C_out;
      float v[64];  // gs <= 64
      for (int64_t n = 0; n < gs; ++n) v[n] = bias[n];
      for (int64_t d = 0; d < g.n_acc; ++d) {
        if (xo < lo[d] || xo >= hi[d]) continue;
        const float* a = acc + d * tile + p * gs;
        for (int64_t n = 0; n < gs; ++n) v[n] += a[n];
      }
      if (res != nullptr)
        for (int64_t n = 0; n < gs; ++n) v[n] += res[o + n];
      if (relu)
        for (int64_t n = 0; n < gs; ++n) v[n] = v[n] > 0.f ? v[n] : 0.f;
      std::memcpy(out + o, v, gs * sizeof(float));
    }
  }
}

void check_nhwc(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4, name,
              " must be a 4-d float32 CPU tensor");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels_last contiguous");
}

void forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& out,
             const std::optional<at::Tensor>& out_groups, const std::optional<at::Tensor>& in_source,
             const std::optional<at::Tensor>& residual, int64_t ksize, int64_t stride, int64_t pad, int64_t gs,
             bool relu, int64_t tile_pixels) {
  check_nhwc(x, "x");
  check_nhwc(out, "out");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), out.size(0), out.size(1), out.size(2), out.size(3),
             ksize, stride, pad, gs, false, 1};
  TORCH_CHECK(gs >= 1 && gs <= 64 && g.C_in % gs == 0 && g.C_out % gs == 0, "bad group size ", gs);
  TORCH_CHECK((ksize == 1 || ksize == 3) && pad == ksize / 2 && (stride == 1 || stride == 2), "bad kernel geometry");
  TORCH_CHECK(g.Ho == (g.H + 2 * pad - ksize) / stride + 1 && g.Wo == (g.W + 2 * pad - ksize) / stride + 1,
              "out has the wrong spatial size");
  const int64_t G_in = g.C_in / gs, G_out = g.C_out / gs, taps = ksize * ksize;
  TORCH_CHECK(w.is_contiguous() && w.scalar_type() == at::kFloat && w.numel() == G_out * taps * g.C_in * gs,
              "packed weight has the wrong size");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == g.C_out, "bad bias");
  g.flat = stride == 1 && g.Wo == g.W;
  g.n_acc = g.flat ? ksize : 1;
  const float* res = nullptr;
  if (residual.has_value()) {
    check_nhwc(*residual, "residual");
    TORCH_CHECK(residual->sizes() == out.sizes(), "residual must have the shape of out");
    res = residual->data_ptr<float>();
  }

  // Runs of the reduction, per sample: consecutive input groups read from the same row merge into one K chunk.
  std::vector<std::vector<Run>> runs(g.B);
  if (in_source.has_value()) {
    const at::Tensor src = in_source->contiguous();
    TORCH_CHECK(src.scalar_type() == at::kLong && src.dim() == 2 && src.size(0) == g.B && src.size(1) == G_in,
                "in_source must be int64 (B, C_in / group_size)");
    const int64_t* s = src.data_ptr<int64_t>();
    for (int64_t b = 0; b < g.B; ++b) {
      for (int64_t q = 0; q < G_in; ++q) {
        const int64_t row = s[b * G_in + q];
        TORCH_CHECK(row >= -1 && row < g.S, "in_source[", b, ", ", q, "] = ", row, " is not a row of x or -1");
        if (row < 0) continue;
        std::vector<Run>& rb = runs[b];
        if (!rb.empty() && rb.back().src == row && rb.back().k0 + rb.back().k == q * gs)
          rb.back().k += gs;
        else
          rb.push_back({row, q * gs, gs});
      }
    }
  } else {
    TORCH_CHECK(g.B <= g.S, "without in_source, sample b reads row b of x: x has fewer rows than out");
    for (int64_t b = 0; b < g.B; ++b) runs[b].push_back({b, 0, g.C_in});
  }

  // Work items (sample, block of output rows, output group). Threads take contiguous ranges of items, so the
  // order decides what stays in cache: with the output group fastest, a block's input rows serve every group while
  // each item streams its group's weights; with the sample fastest, a group's weights serve every sample while each
  // item streams its input rows. Each item streams the smaller of the two, with a bias towards keeping the input
  // rows (a group's weights are read once per item in any case: measured on 7² to 14² maps at batch 8).
  const int64_t rows = std::clamp<int64_t>(tile_pixels / std::max<int64_t>(g.Wo, 1), 1, g.Ho);
  const int64_t n_tiles = (g.Ho + rows - 1) / rows;
  std::vector<uint8_t> active(g.B * G_out, 1);
  if (out_groups.has_value()) {
    const at::Tensor og = out_groups->contiguous();
    TORCH_CHECK(og.scalar_type() == at::kBool && og.dim() == 2 && og.size(0) == g.B && og.size(1) == G_out,
                "out_groups must be bool (B, C_out / group_size)");
    const bool* m = og.data_ptr<bool>();
    for (int64_t i = 0; i < g.B * G_out; ++i) active[i] = m[i];
  }
  const int64_t group_weights = taps * g.C_in * gs;
  const int64_t tile_inputs = std::min(g.H, rows * stride + ksize - 1) * g.W * g.C_in;
  const bool group_fastest = group_weights <= 2 * tile_inputs;
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

  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t per_sample = g.Ho * g.Wo * g.C_out;
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(g.n_acc * rows * g.Wo * gs);
    for (int64_t i = begin; i < end; ++i) {
      const auto [b, t, j] = items[i];
      const int64_t y0 = t * rows, y1 = std::min(g.Ho, y0 + rows);
      accumulate(g, xp, wp, runs[b], j, y0, y1, acc.data());
      epilogue(g, acc.data(), bp + j * gs, res == nullptr ? nullptr : res + b * per_sample + j * gs, relu,
               op + b * per_sample + j * gs, y0, y1);
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
}

}  // namespace

TORCH_LIBRARY(adafuse_group_conv, m) {
  m.def(
      "forward(Tensor x, Tensor weight, Tensor bias, Tensor(a!) out, Tensor? out_groups, Tensor? in_source, "
      "Tensor? residual, int kernel_size, int stride, int padding, int group_size, bool relu, int tile_pixels) -> ()");
  m.impl("forward", c10::DispatchKey::CPU, TORCH_FN(forward));
}
