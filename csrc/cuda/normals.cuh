// Noise normals on the GPU: device helpers that regenerate them inside a kernel, and whole rows generated into a
// tensor (defined in csrc/cuda/noise.cu) for the paths that keep only small factors or vectors of noise.
#pragma once

#include <ATen/core/Tensor.h>

#include "../philox.h"

namespace dopamine_fast {
namespace cuda {

// Lane q (0..3) of a block without a run-time index into the array (which would spill it to local memory).
__device__ __forceinline__ float lane(const Normal4& n, int q) {
  return q == 0 ? n.z[0] : q == 1 ? n.z[1] : q == 2 ? n.z[2] : n.z[3];
}

// Normals of elements e0 .. e0+3 of one stream; only the first `valid` are needed. An unaligned run spans
// two Philox blocks.
__device__ __forceinline__ void normals4(const NoiseKey& key, uint32_t id, int64_t e0, int64_t valid, float (&z)[4]) {
  const uint32_t blk = static_cast<uint32_t>(e0 >> 2);
  const int shift = static_cast<int>(e0 & 3);
  const Normal4 a = noise_block(key, id, blk);
  if (shift == 0) {
#pragma unroll
    for (int l = 0; l < 4; ++l) z[l] = a.z[l];
    return;
  }
  Normal4 b = a;
  if (valid > 4 - shift) b = noise_block(key, id, blk + 1);
#pragma unroll
  for (int l = 0; l < 4; ++l) z[l] = shift + l < 4 ? lane(a, shift + l) : lane(b, shift + l - 4);
}

// Fills the contiguous 2-D tensor `out` with the normals of ids first_id.. of `key`.
void fill_normals(const at::Tensor& out, const NoiseKey& key, int64_t first_id);

// Normals of ids first_id .. first_id+ids-1 as a new [ids, numel] tensor.
at::Tensor normals(int64_t ids, int64_t numel, const NoiseKey& key, int64_t first_id, const at::TensorOptions& opts);

}  // namespace cuda
}  // namespace dopamine_fast
