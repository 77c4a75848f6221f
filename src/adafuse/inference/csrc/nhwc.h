// What the executor's kernels (group_conv.cpp, conv1x1.cpp, conv_rows.cpp) take and give: 4-d float32 CPU
// activations in NHWC (channels_last) memory, a bias, an optional residual, an optional (B, C_out) mean.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace adafuse {

inline void check_nhwc(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4, name,
              " must be a 4-d float32 CPU tensor");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels_last contiguous");
}

inline void check_bias(const at::Tensor& bias, int64_t c_out) {
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == c_out, "bad bias");
}

// The residual's data (nullptr without one), checked against out.
inline const float* residual_data(const std::optional<at::Tensor>& residual, const at::Tensor& out) {
  if (!residual.has_value()) return nullptr;
  check_nhwc(*residual, "residual");
  TORCH_CHECK(residual->sizes() == out.sizes(), "residual must have the shape of out");
  return residual->data_ptr<float>();
}

inline void check_mean(const at::Tensor& mean, int64_t batch, int64_t c_out) {
  TORCH_CHECK(mean.is_contiguous() && mean.scalar_type() == at::kFloat && mean.dim() == 2 &&
                  mean.size(0) == batch && mean.size(1) == c_out,
              "mean must be a contiguous float32 (B, C_out) tensor");
}

// mean (B, C) from per-(sample, block) channel sums: sums[(b * n_blocks + i) * C + c] over a sample's `pixels`.
inline void mean_of_block_sums(const std::vector<float>& sums, int64_t batch, int64_t n_blocks, int64_t channels,
                               int64_t pixels, float* mean) {
  const float scale = 1.f / static_cast<float>(pixels);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      float total = 0.f;
      for (int64_t i = 0; i < n_blocks; ++i) total += sums[(b * n_blocks + i) * channels + c];
      mean[b * channels + c] = total * scale;
    }
}

}  // namespace adafuse
