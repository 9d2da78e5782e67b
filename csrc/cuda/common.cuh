// Launch helpers and device pieces shared by the CUDA kernels of every op (csrc/cuda/*.cu).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../ops.h"

namespace dopamine_fast {
namespace cuda {

constexpr int kThreads = 256;

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Blocks for a grid-stride loop over `total` items: enough to fill the device, no more.
inline unsigned int grid_for(int64_t total) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(total, kThreads), sms * 32)));
}

inline at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline NoiseKey with_stream(NoiseKey key, int64_t stream) {
  key.stream = static_cast<uint32_t>(stream);
  return key;
}

template <typename T>
__device__ __forceinline__ T activate(T v, int act) {
  switch (act) {
    case static_cast<int>(Activation::kTanh):
      if constexpr (std::is_same<T, float>::value) return tanhf(v);
      else return tanh(v);
    case static_cast<int>(Activation::kRelu):
      return v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
    case static_cast<int>(Activation::kSigmoid):
      if constexpr (std::is_same<T, float>::value) return 1.0f / (1.0f + expf(-v));
      else return 1.0 / (1.0 + exp(-v));
    default:
      return v;
  }
}

}  // namespace cuda
}  // namespace dopamine_fast
