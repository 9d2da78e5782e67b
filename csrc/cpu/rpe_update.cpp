// CPU kernel of rpe_update_: param += alpha * sum_j coeffs[j] * eps_j, the noise regenerated, never stored.
//
// Full rank: one pass over the parameter in element runs (parallel over runs); each run accumulates every id's
// normals in a small buffer (a small parameter: groups of ids in parallel instead). Low rank:
// sum_j c_j A_j B_j^T / sqrt(r) is one GEMM of the stacked factors.
#include <ATen/ATen.h>
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

constexpr int64_t kRun = 2048;  // elements per task: the accumulator and noise buffer stay in L1
constexpr int64_t kFewRuns = 8;  // below this many runs the ids, not the runs, are split across threads
constexpr int64_t kIdGroup = 64;  // ids summed per task when the ids are split

// acc[0, count) += sum_{j in [j0, j1)} c_j eps_j[first, first + count), in id order.
template <typename C>
void accumulate_ids(C* acc, const C* c, int64_t j0, int64_t j1, const NoiseKey& key, int64_t first, int64_t count,
                    float* z) {
  for (int64_t j = j0; j < j1; ++j) {
    if (c[j] == C(0)) continue;  // e.g. the baseline member's id: nothing to add, nothing to generate
    cpu::noise_normals(key, static_cast<uint32_t>(j), first, count, z);
    const C cj = c[j];
    for (int64_t i = 0; i < count; ++i) acc[i] += cj * static_cast<C>(z[i]);
  }
}

// T: the parameter's storage type; C: the compute type of the sums and coeffs (float, double for double), so a
// half-precision parameter is updated in place, rounded once, without a float32 copy of it.
template <typename T, typename C>
void update_full_rank(at::Tensor& p, const at::Tensor& coeffs, const NoiseKey& key, double alpha) {
  const int64_t numel = p.numel(), n_ids = coeffs.numel(), runs = (numel + kRun - 1) / kRun;
  T* pp = p.data_ptr<T>();
  const C* c = coeffs.data_ptr<C>();
  const C a = static_cast<C>(alpha);
  if (runs >= kFewRuns || n_ids <= kIdGroup) {  // parallel over runs, each summing every id
    cpu::parallel_for(0, runs, 1, [&](int64_t r0, int64_t r1) {
      std::vector<float> z(kRun);
      std::vector<C> acc(kRun);
      for (int64_t run = r0; run < r1; ++run) {
        const int64_t first = run * kRun, count = std::min(kRun, numel - first);
        std::fill(acc.begin(), acc.begin() + count, C(0));
        accumulate_ids(acc.data(), c, 0, n_ids, key, first, count, z.data());
        for (int64_t i = 0; i < count; ++i) {
          pp[first + i] = static_cast<T>(static_cast<C>(pp[first + i]) + a * acc[i]);
        }
      }
    });
    return;
  }
  // A small parameter with many ids (a bias at large K) would run on one thread: its ids are split into groups
  // summed in parallel, then added in group order, so the bits do not depend on the thread count.
  const int64_t groups = (n_ids + kIdGroup - 1) / kIdGroup;
  std::vector<C> partial(groups * numel, C(0));
  cpu::parallel_for(0, runs * groups, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> z(kRun);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t run = t / groups, g = t % groups, first = run * kRun, count = std::min(kRun, numel - first);
      accumulate_ids(partial.data() + g * numel + first, c, g * kIdGroup, std::min(n_ids, (g + 1) * kIdGroup), key,
                     first, count, z.data());
    }
  });
  for (int64_t i = 0; i < numel; ++i) {
    C sum = 0;
    for (int64_t g = 0; g < groups; ++g) sum += partial[g * numel + i];
    pp[i] = static_cast<T>(static_cast<C>(pp[i]) + a * sum);
  }
}

constexpr int64_t kRowBlock = 64;  // rows of a half-precision parameter updated per float32 product

// T: the compute type (of coeffs and the factors). A parameter of that type takes one in-place GEMM; a
// half-precision one takes the product block of rows by block of rows, added in place (rounded once), so no
// float32 copy of the parameter is made.
template <typename T>
void update_low_rank(at::Tensor& p, const at::Tensor& coeffs, const NoiseKey& key, int64_t r, double alpha) {
  const int64_t out = p.size(0), in = p.numel() / out, n_ids = coeffs.numel();
  // Stacked factors, each id's written contiguously: sa_t[j r + q, o] = c_j A_j[o, q] and sb[j r + q, i] = B_j[i, q];
  // the GEMM reads sa_t transposed.
  at::Tensor sa_t = at::empty({n_ids * r, out}, coeffs.options());
  at::Tensor sb = at::empty({n_ids * r, in}, coeffs.options());
  T* ap = sa_t.data_ptr<T>();
  T* bp = sb.data_ptr<T>();
  const T* c = coeffs.data_ptr<T>();
  cpu::parallel_for(0, n_ids, 1, [&](int64_t j0, int64_t j1) {
    std::vector<float> v((out + in) * r);
    for (int64_t j = j0; j < j1; ++j) {
      cpu::noise_normals(key, static_cast<uint32_t>(j), 0, (out + in) * r, v.data());
      const float* __restrict va = v.data();
      const float* __restrict vb = v.data() + out * r;
      for (int64_t q = 0; q < r; ++q) {
        T* __restrict aq = ap + (j * r + q) * out;
        T* __restrict bq = bp + (j * r + q) * in;
        for (int64_t o = 0; o < out; ++o) aq[o] = c[j] * static_cast<T>(va[o * r + q]);
        for (int64_t i = 0; i < in; ++i) bq[i] = static_cast<T>(vb[i * r + q]);
      }
    }
  });
  at::Tensor p2 = p.view({out, in});
  const double scale = alpha / std::sqrt(static_cast<double>(r));
  if (p.scalar_type() == coeffs.scalar_type()) {
    p2.addmm_(sa_t.t(), sb, /*beta=*/1, /*alpha=*/scale);
    return;
  }
  for (int64_t o0 = 0; o0 < out; o0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, out - o0);
    p2.narrow(0, o0, rows).add_(at::mm(sa_t.narrow(1, o0, rows).t(), sb), scale);
  }
}

void rpe_update_cpu(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step, int64_t stream,
                    int64_t rank, double alpha) {
  if (param.numel() == 0 || coeffs.numel() == 0) return;
  const int64_t r = param.dim() >= 2 ? rank : 0;  // vectors always take full-rank noise
  // Detached: the update writes the parameter's data, which autograd must not record (parallel.h).
  const at::ScalarType compute = param.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor p = param.detach();
  const at::Tensor c = coeffs.detach().to(compute).contiguous();
  const NoiseKey key = make_noise_key(seed, step, stream);
  if (r == 0) {  // in place, whatever the dtype (a strided view through a contiguous copy of itself)
    at::Tensor work = p.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.scalar_type(), "rpe_update_", [&] {
      using C = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;
      update_full_rank<scalar_t, C>(work, c, key, alpha);
    });
    if (!work.is_same(p)) p.copy_(work);
    return;
  }
  // Low rank: a strided view through a contiguous copy of itself, so nothing around it is touched.
  at::Tensor work = p.contiguous();
  AT_DISPATCH_FLOATING_TYPES(compute, "rpe_update_", [&] { update_low_rank<scalar_t>(work, c, key, r, alpha); });
  if (!work.is_same(p)) p.copy_(work);
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU, m) {
  m.impl("rpe_update_", static_cast<dopamine_fast::RpeUpdateKernel*>(&dopamine_fast::rpe_update_cpu));
}
