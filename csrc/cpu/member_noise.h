// Every member's small perturbations, generated once per call on the CPU: perturbed bias vectors and the
// low-rank factors of a weight (docs/noise.md). They take O(K * (out + in) * r) memory, never O(K * P).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "../ops.h"

namespace dopamine_fast {
namespace cpu {

// Members first .. first + count - 1 of an evaluation (docs/noise.md, "Members").
struct Members {
  int64_t first, count;
  bool baseline, antithetic;
  double sigma;
};

// b + s_k sigma e_k for every member k of the range: [count, n] in b's dtype (float or double); b is 1-D and
// contiguous.
at::Tensor member_vectors(const at::Tensor& b, const NoiseKey& key, const Members& members);

// Low-rank factors of an [out, in] weight for every member of the range, transposed so each factor column is
// contiguous: (fa_t, fb_t) with fa_t [K, r, out] = (s_k sigma A_k)^T and fb_t [K, r, in] = B_k^T / sqrt(r), so that
// x (s_k sigma eps_k)^T = (x fb_t_k^T) fa_t_k. Zero for the baseline member.
std::pair<at::Tensor, at::Tensor> member_factors(int64_t out, int64_t in, int64_t rank, const NoiseKey& key,
                                                 const Members& members, const at::TensorOptions& options);

}  // namespace cpu
}  // namespace dopamine_fast
