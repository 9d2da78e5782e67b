// CUDA kernels of perturb_: param += alpha * eps_j for one noise id j, the noise regenerated (docs/noise.md).
//
// Full rank: one thread per block of four elements, one pass. Low rank: the r (out + in) normals of the factors
// are generated into a small buffer, then each thread adds sum_q A[o, q] B[i, q] (scaled by alpha / sqrt(r)) to
// its elements. Sums are formed in the accumulate type (float, double for double) and rounded once.
// Arguments are checked in Python (ops/validation.py); the asserts here guard internal invariants only.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "common.cuh"
#include "normals.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

template <typename T, typename A>
__global__ void perturb_full_kernel(T* param, int64_t numel, NoiseKey key, uint32_t id, A alpha) {
  for (int64_t blk = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; blk * 4 < numel;
       blk += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e0 = blk * 4;
    const Normal4 z = noise_block(key, id, static_cast<uint32_t>(blk));
    const int n = static_cast<int>(min64(4, numel - e0));
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) param[e0 + l] = static_cast<T>(static_cast<A>(param[e0 + l]) + alpha * static_cast<A>(z.z[l]));
  }
}

// factors: [A (out x r) | B (in x r)] row-major, float32.
template <typename T, typename A>
__global__ void perturb_low_rank_kernel(T* param, int64_t out, int64_t in, const float* factors, int64_t rank,
                                        A scale) {
  const float* b = factors + out * rank;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < out * in;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = e / in, i = e % in;
    A acc = A(0);
    for (int64_t q = 0; q < rank; ++q) acc += static_cast<A>(factors[o * rank + q]) * static_cast<A>(b[i * rank + q]);
    param[e] = static_cast<T>(static_cast<A>(param[e]) + scale * acc);
  }
}

void perturb_cuda(const at::Tensor& param, int64_t seed, int64_t step, int64_t stream, int64_t noise_id, int64_t rank,
                  double alpha) {
  TORCH_CHECK(param.is_cuda() && at::isFloatingType(param.scalar_type()),
              "perturb_: param must be a floating CUDA tensor");
  const c10::cuda::CUDAGuard guard(param.device());
  if (param.numel() == 0) return;
  at::Tensor work = param.is_contiguous() ? param : param.contiguous();
  const NoiseKey key = make_noise_key(seed, step, stream);
  const uint32_t id = static_cast<uint32_t>(noise_id);
  const int64_t numel = work.numel();
  const auto cuda_stream = at::cuda::getCurrentCUDAStream();
  at::Tensor factors;
  if (rank > 0 && work.dim() >= 2) {
    const int64_t out = work.size(0), in = work.numel() / out;  // A: [out, rank], B: [in, rank]
    factors = normals(1, (out + in) * rank, key, noise_id, work.options().dtype(at::kFloat));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.scalar_type(), "perturb_", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    if (factors.defined()) {
      const int64_t out = work.size(0);
      perturb_low_rank_kernel<scalar_t, acc_t><<<grid_for(numel), kThreads, 0, cuda_stream>>>(
          work.data_ptr<scalar_t>(), out, numel / out, factors.data_ptr<float>(), rank,
          static_cast<acc_t>(alpha / std::sqrt(static_cast<double>(rank))));
    } else {
      perturb_full_kernel<scalar_t, acc_t><<<grid_for(ceil_div(numel, 4)), kThreads, 0, cuda_stream>>>(
          work.data_ptr<scalar_t>(), numel, key, id, static_cast<acc_t>(alpha));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (!work.is_same(param)) param.copy_(work);
}

}  // namespace
}  // namespace cuda
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  m.impl("perturb_", static_cast<dopamine_fast::PerturbKernel*>(&dopamine_fast::cuda::perturb_cuda));
}
