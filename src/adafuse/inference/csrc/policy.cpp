// An AdaFuse policy net in one call: ids (B, G) = argmax over each group's actions of
// fc1(relu(fc0([v_prev, v]))), the BatchNorm folded into fc0. Both layers run on the dense kernels' micro-tile
// (micro_tile.h) with their weights packed once as 16-channel panels (hidden and output widths padded to 16 with
// zeros): a policy is a few GEMV-sized products per block, where six PyTorch calls (cat, two addmm, relu, view,
// argmax) cost more than the arithmetic, and MKL's small-GEMM path on this CPU runs at half the tile's rate.
//
// v_prev, the pooled input of each row's previous frame, is one of: a tensor (B, C); the row above within clips of
// clip_len rows (zeros at a clip's first row: clip mode, all frames at once); zeros (no tensor, clip_len 0). A
// policy without history (fc0 over v only) ignores it. The zero history never enters the reduction. Ties go to
// the first action, as torch.argmax. One thread: the work is a few hundred thousand multiply-accumulates.
// Registered as torch.ops.adafuse_cpu.policy (see adafuse/inference/sparse.py).

#include <ATen/ATen.h>
#include <torch/library.h>

#include "micro_tile.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace {

using adafuse::kLanes;
using adafuse::kRows;
using adafuse::kTilePanels;

// out (B, N) = act(sum over segments of rows(a) @ panels + bias): `segments(row, slot, seg, s)` sets what tile slot
// `slot` reads for segment `seg` (the rows past a last partial tile repeat its last row).
template <typename Segments>
void dense_rows(int64_t B, int64_t n_segs, Segments segments, const float* w, int64_t K, const float* bias,
                int64_t N, bool relu, float* out) {
  const int64_t panels = N / kLanes;
  std::vector<adafuse::Segment> segs(n_segs);
  for (int64_t p = 0; p < B; p += kRows) {
    const int64_t rows = std::min(kRows, B - p);
    for (int64_t s = 0; s < n_segs; ++s) {
      for (int64_t r = 0; r < kRows; ++r) segments(p + std::min(r, rows - 1), r, s, segs[s]);
    }
    for (int64_t j = 0; j < panels; j += kTilePanels) {
      const int64_t n_panels = std::min(kTilePanels, panels - j);
      adafuse::Tile t;
      for (int64_t r = 0; r < rows; ++r) t.c[r] = out + (p + r) * N + j * kLanes, t.r[r] = nullptr;
      t.sum = nullptr;
      adafuse::micro_tile_for(rows, n_panels)(t, segs.data(), n_segs, w + j * K * kLanes, K * kLanes,
                                              bias + j * kLanes, true, true, relu);
    }
  }
}

void policy(const at::Tensor& v, const std::optional<at::Tensor>& v_prev, int64_t clip_len, const at::Tensor& w0,
            const at::Tensor& b0, const at::Tensor& w1, const at::Tensor& b1, int64_t decisions, int64_t actions,
            const at::Tensor& ids) {
  TORCH_CHECK(v.dim() == 2 && v.is_contiguous() && v.scalar_type() == at::kFloat, "v must be (B, C) float32");
  const int64_t B = v.size(0), C = v.size(1);
  for (const at::Tensor* t : {&w0, &b0, &w1, &b1})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kFloat, "policy weights must be contiguous float32");
  TORCH_CHECK(w0.dim() == 3 && w0.size(2) == kLanes, "bad packed fc0 weight");
  TORCH_CHECK(w1.dim() == 3 && w1.size(2) == kLanes, "bad packed fc1 weight");
  const int64_t K0 = w0.size(1), H = w0.size(0) * kLanes, K1 = w1.size(1), N = w1.size(0) * kLanes;
  TORCH_CHECK(K0 == C || K0 == 2 * C, "fc0 takes C or 2 C features");
  TORCH_CHECK(K1 == H && b0.numel() == H && b1.numel() == N && decisions * actions <= N, "policy shapes disagree");
  TORCH_CHECK(ids.dim() == 2 && ids.size(0) == B && ids.size(1) == decisions && ids.is_contiguous() &&
                  ids.scalar_type() == at::kLong,
              "ids must be a contiguous int64 (B, decisions) tensor");
  const bool history = K0 == 2 * C;
  const float* vp = v.data_ptr<float>();
  const float* prev = nullptr;
  if (v_prev.has_value()) {
    TORCH_CHECK(v_prev->sizes() == v.sizes() && v_prev->is_contiguous() && v_prev->scalar_type() == at::kFloat,
                "v_prev must be a contiguous float32 tensor of v's shape");
    prev = v_prev->data_ptr<float>();
  }
  // A row whose previous frame is zeros reads this instead (the tile's rows share their segments).
  const std::vector<float> zeros(history ? C : 0, 0.f);
  auto previous = [&](int64_t row) -> const float* {
    if (prev != nullptr) return prev + row * C;
    if (clip_len > 0 && row % clip_len != 0) return vp + (row - 1) * C;
    return zeros.data();
  };
  const bool zero_history = !history || (prev == nullptr && clip_len <= 1);
  std::vector<float> hidden(B * H), logits(B * N);
  if (zero_history) {  // fc0 over v only: its weight rows [C, 2C) with history
    dense_rows(B, 1, [&](int64_t row, int64_t slot, int64_t, adafuse::Segment& s) {
      s.a[slot] = vp + row * C, s.w = history ? C * kLanes : 0, s.n = C;
    }, w0.data_ptr<float>(), K0, b0.data_ptr<float>(), H, true, hidden.data());
  } else {
    dense_rows(B, 2, [&](int64_t row, int64_t slot, int64_t seg, adafuse::Segment& s) {
      s.a[slot] = seg == 0 ? previous(row) : vp + row * C, s.w = seg * C * kLanes, s.n = C;
    }, w0.data_ptr<float>(), K0, b0.data_ptr<float>(), H, true, hidden.data());
  }
  dense_rows(B, 1, [&](int64_t row, int64_t slot, int64_t, adafuse::Segment& s) {
    s.a[slot] = hidden.data() + row * H, s.w = 0, s.n = H;
  }, w1.data_ptr<float>(), H, b1.data_ptr<float>(), N, false, logits.data());
  int64_t* out = ids.data_ptr<int64_t>();
  for (int64_t row = 0; row < B; ++row)
    for (int64_t g = 0; g < decisions; ++g) {
      const float* l = logits.data() + row * N + g * actions;
      int64_t best = 0;
      for (int64_t a = 1; a < actions; ++a)
        if (l[a] > l[best]) best = a;
      out[row * decisions + g] = best;
    }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def(
      "policy(Tensor v, Tensor? v_prev, int clip_len, Tensor w0, Tensor b0, Tensor w1, Tensor b1, int decisions, "
      "int actions, Tensor(a!) ids) -> ()");
  m.impl("policy", c10::DispatchKey::CPU, TORCH_FN(policy));
}
