// CUDA kernels of noise_ and noise_bits_: the normals or raw Philox words of noise ids of one stream, regenerated
// from (seed, step, stream, id, element) as docs/noise.md specifies.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "common.cuh"
#include "normals.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

// One thread per block of four elements of one row (noise id) of the contiguous [rows, numel] output.
// `vec`: float rows of a multiple of 4 elements from a 16-byte aligned start take one 16-byte store per block.
template <typename T>
__global__ void noise_kernel(T* out, int64_t rows, int64_t numel, NoiseKey key, uint32_t first_id, bool vec) {
  const int64_t blocks = ceil_div(numel, 4);
  const int64_t total = rows * blocks;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / blocks, blk = t - row * blocks;
    const Normal4 z = noise_block(key, first_id + static_cast<uint32_t>(row), static_cast<uint32_t>(blk));
    T* dst = out + row * numel + blk * 4;
    if constexpr (std::is_same<T, float>::value) {
      if (vec) {
        *reinterpret_cast<float4*>(dst) = make_float4(z.z[0], z.z[1], z.z[2], z.z[3]);
        continue;
      }
    }
    const int n = static_cast<int>(min64(4, numel - blk * 4));
#pragma unroll
    for (int l = 0; l < 4; ++l)  // constant indices keep z in registers
      if (l < n) dst[l] = static_cast<T>(z.z[l]);
  }
}

__global__ void noise_bits_kernel(int64_t* out, int64_t rows, int64_t numel, NoiseKey key, uint32_t first_id) {
  const int64_t blocks = ceil_div(numel, 4);
  const int64_t total = rows * blocks;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / blocks, blk = t - row * blocks;
    const Philox4 w = noise_block_bits(key, first_id + static_cast<uint32_t>(row), static_cast<uint32_t>(blk));
    int64_t* dst = out + row * numel + blk * 4;
    const int n = static_cast<int>(min64(4, numel - blk * 4));
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) dst[l] = static_cast<int64_t>(w.x[l]);
  }
}

}  // namespace

void fill_normals(const at::Tensor& out, const NoiseKey& key, int64_t first_id) {
  const int64_t rows = out.size(0), numel = out.size(1);
  if (rows == 0 || numel == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "noise_", [&] {
    const bool vec = numel % 4 == 0 && reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
    noise_kernel<scalar_t><<<grid_for(rows * ceil_div(numel, 4)), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), rows, numel, key, static_cast<uint32_t>(first_id), vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor normals(int64_t ids, int64_t numel, const NoiseKey& key, int64_t first_id, const at::TensorOptions& opts) {
  at::Tensor v = at::empty({ids, numel}, opts);
  fill_normals(v, key, first_id);
  return v;
}

namespace {

void noise_cuda(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  TORCH_CHECK(out.is_cuda(), "out must be a CUDA tensor, got ", out.device());
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor dst = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  fill_normals(dst, make_noise_key(seed, step, stream), first_id);
  if (!dst.is_same(out)) out.copy_(dst);
}

void noise_bits_cuda(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  TORCH_CHECK(out.is_cuda(), "out must be a CUDA tensor, got ", out.device());
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor dst = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  const int64_t rows = dst.size(0), numel = dst.size(1);
  if (rows > 0 && numel > 0) {
    noise_bits_kernel<<<grid_for(rows * ceil_div(numel, 4)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dst.data_ptr<int64_t>(), rows, numel, make_noise_key(seed, step, stream),
        static_cast<uint32_t>(first_id));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (!dst.is_same(out)) out.copy_(dst);
}

}  // namespace
}  // namespace cuda
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  // The casts make a signature that differs from the CPU kernels' (ops.h) a compile error, not a load-time abort.
  m.impl("noise_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::cuda::noise_cuda));
  m.impl("noise_bits_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::cuda::noise_bits_cuda));
}
