// The per-row part of a low-rank perturbed layer on the CPU, fused: for member k and row b,
//   y[k, b, :] = base[b, :] + bias[k, :] + sum_terms sum_j (u[k, b, :] . fb_t[k, j, :]) fa_t[k, j, :]
// with the factors of member_noise.h (fa_t = (s sigma A)^T, fb_t = B^T / sqrt(r)). One pass writes each output
// row; the GEMMs with the shared weights are left to BLAS. Rank is small, so the r dot products and r axpys
// per row are cheap next to the row's GEMM.
#pragma once

#include <cstdint>
#include <vector>

#include "dot.h"
#include "parallel.h"

namespace dopamine_fast {
namespace cpu {

// One low-rank term: the input rows u (member k, row b at u + k * member_stride + b * row_stride) and the
// member's factors fa_t [K, r, out] and fb_t [K, r, in], contiguous.
template <typename T>
struct LowRankTerm {
  const T* u;
  int64_t member_stride, row_stride, in;
  const T* fa_t;
  const T* fb_t;
};

// y: [K, B, out] contiguous. base: [B, out] rows shared by all members, or null. bias: [K, out] or null.
template <typename T>
void low_rank_rows(T* y, int64_t members, int64_t rows, int64_t out, int64_t rank, const T* base, const T* bias,
                   const std::vector<LowRankTerm<T>>& terms) {
  parallel_for(0, members * rows, 64, [&](int64_t i0, int64_t i1) {
    std::vector<T> t(rank);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = i / rows, b = i % rows;
      T* dst = y + i * out;
      const T* bk = bias ? bias + k * out : nullptr;
      const T* br = base ? base + b * out : nullptr;
      for (int64_t o = 0; o < out; ++o) dst[o] = (br ? br[o] : T(0)) + (bk ? bk[o] : T(0));
      for (const LowRankTerm<T>& term : terms) {
        const T* u = term.u + k * term.member_stride + b * term.row_stride;
        const T* fb = term.fb_t + k * rank * term.in;
        const T* fa = term.fa_t + k * rank * out;
        for (int64_t j = 0; j < rank; ++j) t[j] = dot(u, fb + j * term.in, term.in);
        for (int64_t j = 0; j < rank; ++j) {
          const T c = t[j];
          const T* a = fa + j * out;
          for (int64_t o = 0; o < out; ++o) dst[o] += c * a[o];
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace dopamine_fast
