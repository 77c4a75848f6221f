// Global average pooling of NHWC float32 activations: mean (B, C) over each sample's H x W pixels, what a policy
// and the classifier read. ATen's reduction over the (B, H·W, C) view ran at a third of the memory bandwidth here
// (its vectorised outer sum is an AVX2 loop with a store per row); this one adds four pixel rows into the running
// sums per pass, in vector registers where the compiler has them, and splits the samples across threads.
// Registered as torch.ops.adafuse_cpu.mean_hw (see adafuse/inference/kernels.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "nhwc.h"

#include <algorithm>
#include <vector>

namespace {

void mean_hw(const at::Tensor& x, const at::Tensor& mean) {
  adafuse::check_nhwc(x, "x");
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  adafuse::check_mean(mean, B, C);
  const float* xp = x.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  const float scale = 1.f / static_cast<float>(std::max<int64_t>(P, 1));
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(C);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(acc.begin(), acc.end(), 0.f);
      float* a = acc.data();
      const float* row = xp + b * P * C;
      int64_t p = 0;
      for (; p + 4 <= P; p += 4, row += 4 * C)
        for (int64_t c = 0; c < C; ++c) a[c] += (row[c] + row[C + c]) + (row[2 * C + c] + row[3 * C + c]);
      for (; p < P; ++p, row += C)
        for (int64_t c = 0; c < C; ++c) a[c] += row[c];
      float* m = mp + b * C;
      for (int64_t c = 0; c < C; ++c) m[c] = a[c] * scale;
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adafuse_cpu, m) {
  m.def("mean_hw(Tensor x, Tensor(a!) mean) -> ()");
  m.impl("mean_hw", c10::DispatchKey::CPU, TORCH_FN(mean_hw));
}
