// What the executor's kernels (group_conv.cpp, conv1x1.cpp) take and give: 4-d float32 CPU activations in NHWC
// (channels_last) memory.
#pragma once

#include <ATen/ATen.h>

namespace adafuse {

inline void check_nhwc(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4, name,
              " must be a 4-d float32 CPU tensor");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels_last contiguous");
}

}  // namespace adafuse
