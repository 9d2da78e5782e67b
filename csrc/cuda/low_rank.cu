// The low-rank (cuBLAS) paths of the perturbed layers on the GPU: member table, perturbed biases, factors,
// projections and the epilogue kernel (declared in csrc/cuda/low_rank.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "common.cuh"
#include "low_rank.cuh"
#include "normals.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

template <typename T>
__global__ void member_table_kernel(int64_t* ids, T* signs, int64_t first_member, int64_t members, int64_t first_id,
                                    bool baseline, bool antithetic) {
  const int64_t m = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (m >= members) return;
  const MemberNoise mn = member_noise(first_member + m, baseline, antithetic);
  ids[m] = mn.sign == 0.0f ? 0 : static_cast<int64_t>(mn.id) - first_id;  // the baseline reads any row, times 0
  signs[m] = static_cast<T>(mn.sign);
}

template <typename T>
__global__ void epilogue_kernel(const EpilogueArgs<T> a) {
  const int64_t total = a.members * a.rows * a.n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = idx % a.n, mb = idx / a.n;
    const int64_t b = mb % a.rows, m = mb / a.rows;
    T v = a.src[idx];
    if (a.add != nullptr) v += a.add[m * a.add_member + b * a.add_row + o];
    if (a.bias != nullptr) v += a.bias[m * a.n + o];
    a.dst[m * a.dst_member + b * a.dst_row + o] = activate(v, a.activation);
  }
}

}  // namespace

MemberTable member_table(int64_t first_member, int64_t members, bool baseline, bool antithetic,
                         const at::TensorOptions& opts) {
  MemberTable t{at::empty({members}, opts.dtype(at::kLong)), at::empty({members}, opts),
                noise_id_range(first_member, members, baseline, antithetic)};
  AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "member_table", [&] {
    const auto blocks = static_cast<unsigned int>(ceil_div(members, kThreads));
    member_table_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        t.ids.data_ptr<int64_t>(), t.signs.data_ptr<scalar_t>(), first_member, members, t.id_range.first, baseline,
        antithetic);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return t;
}

template <typename T>
void launch_epilogue(const EpilogueArgs<T>& a) {
  const int64_t total = a.members * a.rows * a.n;
  if (total == 0) return;
  epilogue_kernel<T><<<grid_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_epilogue<float>(const EpilogueArgs<float>& a);
template void launch_epilogue<double>(const EpilogueArgs<double>& a);

at::Tensor member_biases(const std::optional<at::Tensor>& b0, int64_t s0, const std::optional<at::Tensor>& b1,
                         int64_t s1, const NoiseKey& key, double sigma, int64_t members, const MemberTable& table) {
  const NoiseIdRange& ids = table.id_range;
  at::Tensor sum, noise;
  for (const auto& [b, s] : {std::make_pair(&b0, s0), std::make_pair(&b1, s1)}) {
    if (!b->has_value()) continue;
    const at::Tensor& bias = **b;
    sum = sum.defined() ? sum + bias : bias;
    if (ids.count > 0) {
      at::Tensor e = normals(ids.count, bias.size(0), with_stream(key, s), ids.first, bias.options());
      noise = noise.defined() ? noise + e : e;
    }
  }
  if (!sum.defined()) return sum;
  if (!noise.defined()) return sum.expand({members, sum.size(0)}).contiguous();
  return (sum + (table.signs * sigma).unsqueeze(1) * noise.index_select(0, table.ids)).contiguous();
}

std::pair<at::Tensor, at::Tensor> low_rank_factors(int64_t out, int64_t in, int64_t rank, const NoiseIdRange& ids,
                                                   const NoiseKey& key, const at::TensorOptions& opts) {
  const int64_t n_ids = ids.count;
  const at::Tensor v = normals(n_ids, (out + in) * rank, key, ids.first, opts);
  return {v.narrow(1, 0, out * rank).view({n_ids, out, rank}), v.narrow(1, out * rank, in * rank).view({n_ids, in, rank})};
}

at::Tensor project_rows(const at::Tensor& x, bool shared, const at::Tensor& factor_b, const MemberTable& table) {
  const int64_t n = factor_b.size(0), in = factor_b.size(1), r = factor_b.size(2);
  if (shared) {
    const at::Tensor t = at::matmul(x, factor_b.permute({1, 0, 2}).reshape({in, n * r}));  // [rows, n*r]
    return t.view({x.size(0), n, r}).permute({1, 0, 2}).index_select(0, table.ids);
  }
  return at::bmm(x, factor_b.index_select(0, table.ids));
}

}  // namespace cuda
}  // namespace dopamine_fast
