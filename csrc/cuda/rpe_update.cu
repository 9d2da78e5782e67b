// CUDA kernels of rpe_update_: param += alpha * sum_j c_j eps_j, the noise regenerated from (seed, step, stream,
// id, element) as docs/noise.md specifies.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "normals.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

// Full rank, one thread per block of four elements: acc = sum over ids j in this CTA row's group of
// c_j eps_j. With one group it updates the parameter directly; with several it writes its partial sum and
// rpe_finalize_kernel adds the groups in a fixed order (deterministic, no atomics).
template <typename T, typename A>
__global__ void rpe_full_kernel(T* param, A* partial, int64_t numel, const A* coeffs, int64_t n_ids,
                                int64_t ids_per_group, NoiseKey key, A alpha) {
  const int64_t blk = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t e0 = blk * 4;
  if (e0 >= numel) return;
  const int64_t j0 = blockIdx.y * ids_per_group, j1 = min64(n_ids, j0 + ids_per_group);
  A acc[4] = {A(0), A(0), A(0), A(0)};
  for (int64_t j = j0; j < j1; ++j) {
    const A c = coeffs[j];
    const Normal4 z = noise_block(key, static_cast<uint32_t>(j), static_cast<uint32_t>(blk));
#pragma unroll
    for (int l = 0; l < 4; ++l) acc[l] += c * static_cast<A>(z.z[l]);
  }
  const int n = static_cast<int>(min64(4, numel - e0));
  if (partial != nullptr) {
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) partial[blockIdx.y * numel + e0 + l] = acc[l];
  } else {
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) param[e0 + l] = static_cast<T>(static_cast<A>(param[e0 + l]) + alpha * acc[l]);
  }
}

template <typename T, typename A>
__global__ void rpe_finalize_kernel(T* param, const A* partial, int64_t numel, int64_t groups, A alpha) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < numel;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int64_t g = 0; g < groups; ++g) s += partial[g * numel + e];
    param[e] = static_cast<T>(static_cast<A>(param[e]) + alpha * s);
  }
}

void rpe_full(const at::Tensor& param, const at::Tensor& coeffs, const NoiseKey& key, double alpha) {
  at::Tensor work = param.is_contiguous() ? param : param.contiguous();
  const int64_t numel = work.numel(), n_ids = coeffs.numel();
  const int64_t blocks = ceil_div(numel, 4);
  // Split the ids over CTA rows only when the parameter alone cannot fill the device.
  const int64_t target = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 2048;
  int64_t groups = std::min({ceil_div(target, blocks), ceil_div(n_ids, 8), int64_t{65535}});
  groups = std::max<int64_t>(groups, 1);
  const int64_t per_group = ceil_div(n_ids, groups);
  groups = ceil_div(n_ids, per_group);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.scalar_type(), "rpe_update_", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const at::Tensor c = coeffs.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    at::Tensor partial;
    if (groups > 1) partial = at::empty({groups, numel}, c.options());
    const dim3 grid(static_cast<unsigned int>(ceil_div(blocks, kThreads)), static_cast<unsigned int>(groups));
    rpe_full_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        work.data_ptr<scalar_t>(), groups > 1 ? partial.data_ptr<acc_t>() : nullptr, numel, c.data_ptr<acc_t>(), n_ids,
        per_group, key, static_cast<acc_t>(alpha));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (groups > 1) {
      rpe_finalize_kernel<scalar_t, acc_t><<<grid_for(numel), kThreads, 0, stream>>>(
          work.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), numel, groups, static_cast<acc_t>(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  if (!work.is_same(param)) param.copy_(work);
}

// Low rank: sum_j c_j A_j B_j^T = [c_j A_j]_j [B_j]_j^T, one GEMM of stacked factors per chunk of ids.
void rpe_low_rank(const at::Tensor& param, const at::Tensor& coeffs, const NoiseKey& key, int64_t rank,
                  double alpha) {
  const auto ct = compute_type(param.scalar_type());
  const auto opts = param.options().dtype(ct);
  const int64_t out = param.size(0), in = param.numel() / std::max<int64_t>(out, 1), n_ids = coeffs.numel();
  const at::Tensor c = coeffs.to(ct);
  at::Tensor total = at::zeros({out, in}, opts);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, (out + in) * rank));
  for (int64_t j0 = 0; j0 < n_ids; j0 += chunk) {
    const int64_t nc = std::min(chunk, n_ids - j0);
    const at::Tensor v = normals(nc, (out + in) * rank, key, j0, opts);
    const at::Tensor a = v.narrow(1, 0, out * rank).view({nc, out, rank}) * c.narrow(0, j0, nc).view({nc, 1, 1});
    const at::Tensor b = v.narrow(1, out * rank, in * rank).view({nc, in, rank});
    total.addmm_(a.permute({1, 0, 2}).reshape({out, nc * rank}), b.permute({1, 0, 2}).reshape({in, nc * rank}).t());
  }
  param.add_(total.view(param.sizes()).to(param.scalar_type()), alpha / std::sqrt(static_cast<double>(rank)));
}

void rpe_update_cuda(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step, int64_t stream,
                     int64_t rank, double alpha) {
  TORCH_CHECK(param.is_cuda(), "param must be a CUDA tensor, got ", param.device());
  const c10::cuda::CUDAGuard guard(param.device());
  if (param.numel() == 0 || coeffs.numel() == 0) return;
  const NoiseKey key = make_noise_key(seed, step, stream);
  if (rank == 0 || param.dim() < 2) {
    rpe_full(param, coeffs, key, alpha);
  } else {
    rpe_low_rank(param, coeffs, key, rank, alpha);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  // The casts make a signature that differs from the CPU kernels' (ops.h) a compile error, not a load-time abort.
  m.impl("rpe_update_", static_cast<dopamine_fast::RpeUpdateKernel*>(&dopamine_fast::cuda::rpe_update_cuda));
}
