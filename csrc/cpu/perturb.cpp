// CPU kernel of perturb_: param += alpha * eps_j for one noise id j, the noise regenerated, never stored.
//
// Full rank: one pass over the parameter in element runs (parallel over runs), each run's normals generated into
// a small buffer. Low rank: eps_j = A_j B_j^T / sqrt(r) from r (out + in) normals, added by an in-place rank-r
// GEMM (float32, float64) or, for half-precision parameters, row by row: each row adds
// sum_q (alpha A[o, q] / sqrt(r)) B[:, q] (r axpys in a float32 row buffer); no [out, in] product is formed.
// Sums are formed in the compute type (double for double, float otherwise) and rounded once to the parameter's.
// Arguments are checked in Python (ops/validation.py); the asserts here guard internal invariants only.
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "normals.h"
#include "parallel.h"

namespace dopamine_fast {
namespace {

constexpr int64_t kRun = 2048;  // elements per task: the noise buffer stays in L1

template <typename T, typename C>
void perturb_full_rank(T* p, int64_t numel, const NoiseKey& key, uint32_t id, C alpha) {
  cpu::parallel_for(0, (numel + kRun - 1) / kRun, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> z(kRun);
    for (int64_t run = r0; run < r1; ++run) {
      const int64_t first = run * kRun, count = std::min(kRun, numel - first);
      cpu::noise_normals(key, id, first, count, z.data());
      T* dst = p + first;
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<T>(static_cast<C>(dst[i]) + alpha * z[i]);
    }
  });
}

template <typename T, typename C>
void perturb_low_rank(T* p, int64_t out, int64_t in, const NoiseKey& key, uint32_t id, int64_t r, C alpha) {
  std::vector<float> v((out + in) * r);
  cpu::noise_normals(key, id, 0, (out + in) * r, v.data());
  // bt[q, i] = B[i, q] (rows contiguous for the axpys); a[o, q] scaled by alpha / sqrt(r).
  std::vector<C> bt(r * in), a(out * r);
  const C scale = alpha / std::sqrt(static_cast<C>(r));
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t q = 0; q < r; ++q) bt[q * in + i] = static_cast<C>(v[out * r + i * r + q]);
  }
  for (int64_t k = 0; k < out * r; ++k) a[k] = scale * static_cast<C>(v[k]);
  cpu::parallel_for(0, out, std::max<int64_t>(1, kRun / std::max<int64_t>(in, 1)), [&](int64_t o0, int64_t o1) {
    std::vector<C> row(in);
    for (int64_t o = o0; o < o1; ++o) {
      T* dst = p + o * in;
      for (int64_t i = 0; i < in; ++i) row[i] = static_cast<C>(dst[i]);
      for (int64_t q = 0; q < r; ++q) {
        const C aq = a[o * r + q];
        const C* __restrict__ b = bt.data() + q * in;
        C* __restrict__ acc = row.data();
        for (int64_t i = 0; i < in; ++i) acc[i] += aq * b[i];
      }
      for (int64_t i = 0; i < in; ++i) dst[i] = static_cast<T>(row[i]);
    }
  });
}

// Low rank of a float32 or float64 parameter: one in-place rank-r GEMM update (BLAS), p += (s A) B^T.
void perturb_low_rank_gemm(at::Tensor& work, const NoiseKey& key, uint32_t id, int64_t r, double alpha) {
  const int64_t out = work.size(0), in = work.numel() / out;
  at::Tensor v = at::empty({(out + in) * r}, work.options().dtype(at::kFloat));
  cpu::noise_normals(key, id, 0, (out + in) * r, v.data_ptr<float>());
  v = v.to(work.scalar_type());
  const at::Tensor a = v.narrow(0, 0, out * r).view({out, r});
  const at::Tensor b = v.narrow(0, out * r, in * r).view({in, r});
  at::Tensor matrix = work.view({out, in});
  matrix.addmm_(a, b.t(), /*beta=*/1, /*alpha=*/alpha / std::sqrt(static_cast<double>(r)));
}

template <typename T>
void perturb_typed(at::Tensor& work, const NoiseKey& key, uint32_t id, int64_t r, double alpha) {
  using C = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  T* p = work.data_ptr<T>();
  if (r == 0) {
    perturb_full_rank<T, C>(p, work.numel(), key, id, static_cast<C>(alpha));
  } else if constexpr (std::is_same<T, C>::value) {
    perturb_low_rank_gemm(work, key, id, r, alpha);
  } else {
    const int64_t out = work.size(0);
    perturb_low_rank<T, C>(p, out, work.numel() / out, key, id, r, static_cast<C>(alpha));
  }
}

void perturb_cpu(const at::Tensor& param, int64_t seed, int64_t step, int64_t stream, int64_t noise_id, int64_t rank,
                 double alpha) {
  TORCH_CHECK(param.device().is_cpu() && at::isFloatingType(param.scalar_type()),
              "perturb_: param must be a floating CPU tensor");
  if (param.numel() == 0) return;
  const int64_t r = param.dim() >= 2 ? rank : 0;  // vectors always take full-rank noise
  // Detached: the kernel writes the parameter's data, which autograd must not record (parallel.h). A strided view
  // is perturbed through a contiguous copy, so nothing around it is touched.
  const at::Tensor p = param.detach();
  at::Tensor work = p.contiguous();
  const NoiseKey key = make_noise_key(seed, step, stream);
  const uint32_t id = static_cast<uint32_t>(noise_id);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.scalar_type(), "perturb_", [&] {
    perturb_typed<scalar_t>(work, key, id, r, alpha);
  });
  if (!work.is_same(p)) p.copy_(work);
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU, m) {
  m.impl("perturb_", static_cast<dopamine_fast::PerturbKernel*>(&dopamine_fast::perturb_cpu));
}
