// The low-rank (cuBLAS) paths of the perturbed layers on the GPU (perturbed_linear, perturbed_rnn): every member's
// noise id and sign, perturbed biases and low-rank factors, generated once per call, and the epilogue kernel that
// adds the terms and applies the activation (csrc/cuda/low_rank.cu). They take O(K * (out + in) * r) memory,
// never O(K * P).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "../ops.h"

namespace dopamine_fast {
namespace cuda {

// Noise id and sign of every member of a range, as device tensors: ids int64 [M], counted from the range's first
// noise id (ids.first), so they index the range's noise; signs [M] in the compute dtype.
struct MemberTable {
  at::Tensor ids, signs;
  NoiseIdRange id_range;
};

MemberTable member_table(int64_t first_member, int64_t members, bool baseline, bool antithetic,
                         const at::TensorOptions& opts);

// Bias of every member, [M, n]: sum of the biases plus s_m sigma times the sum of their noise; undefined
// when there is no bias.
at::Tensor member_biases(const std::optional<at::Tensor>& b0, int64_t s0, const std::optional<at::Tensor>& b1,
                         int64_t s1, const NoiseKey& key, double sigma, int64_t members, const MemberTable& table);

// Factors of the low-rank noise of a weight [out, in] for the n noise ids of `ids`: A [n, out, r], B [n, in, r].
std::pair<at::Tensor, at::Tensor> low_rank_factors(int64_t out, int64_t in, int64_t rank, const NoiseIdRange& ids,
                                                   const NoiseKey& key, const at::TensorOptions& opts);

// x B_j for every member: [M, rows, r]. Shared rows take one GEMM against every id's factor at once.
at::Tensor project_rows(const at::Tensor& x, bool shared, const at::Tensor& factor_b, const MemberTable& table);

template <typename T>
struct EpilogueArgs {
  const T* src;  // [members, rows, n], contiguous
  const T* add;  // optional: element (m, b, o) at add[m * add_member + b * add_row + o]
  int64_t add_member, add_row;
  const T* bias;  // optional: [members, n], contiguous
  T* dst;         // element (m, b, o) at dst[m * dst_member + b * dst_row + o]
  int64_t dst_member, dst_row;
  int64_t members, rows, n;
  int activation;
};

// dst = act(src + add + bias), elementwise; instantiated for float and double.
template <typename T>
void launch_epilogue(const EpilogueArgs<T>& a);

}  // namespace cuda
}  // namespace dopamine_fast
