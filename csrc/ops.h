// Declarations shared by the CPU (csrc/cpu/*.cpp) and CUDA (csrc/cuda/*.cu) kernels of dopamine_fast_C.
//
// Each kernel file registers its own implementations with TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU|CUDA, m) against
// the schemas Python defines from dopamine_fast/ops/specs.py. The kernels assume checked arguments: the public op
// checks them (dopamine_fast/ops/validation.py), and a direct call of torch.ops.dopamine_fast_C.<op> is unchecked.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>

#include "philox.h"

namespace dopamine_fast {

// Noise id and sign of member m; the unperturbed member has id 0 and sign 0. The C++ copy of the one definition,
// dopamine_fast/plan.py's member_noise_ids (tests/test_member_numbering.py checks it through the ops).
struct MemberNoise {
  uint32_t id;
  float sign;
};

DF_HOST_DEVICE MemberNoise member_noise(int64_t m, bool baseline, bool antithetic) {
  const int64_t p = m - (baseline ? 1 : 0);
  if (p < 0) return MemberNoise{0u, 0.0f};
  if (antithetic) return MemberNoise{static_cast<uint32_t>(p >> 1), (p & 1) ? -1.0f : 1.0f};
  return MemberNoise{static_cast<uint32_t>(p), 1.0f};
}

// How many distinct noise ids `num_members` members use.
DF_HOST_DEVICE int64_t num_noise_ids(int64_t num_members, bool baseline, bool antithetic) {
  const int64_t perturbed = num_members - (baseline ? 1 : 0);
  if (perturbed <= 0) return 0;
  return antithetic ? (perturbed + 1) / 2 : perturbed;
}

// The noise ids that members first_member .. first_member + num_members - 1 use: [first, first + count), count 0
// when none of them is perturbed.
struct NoiseIdRange {
  int64_t first, count;
};

inline NoiseIdRange noise_id_range(int64_t first_member, int64_t num_members, bool baseline, bool antithetic) {
  const int64_t m0 = first_member > (baseline ? 1 : 0) ? first_member : (baseline ? 1 : 0);
  const int64_t end = first_member + num_members;
  if (m0 >= end) return NoiseIdRange{0, 0};
  const int64_t first = member_noise(m0, baseline, antithetic).id;
  return NoiseIdRange{first, member_noise(end - 1, baseline, antithetic).id - first + 1};
}

enum class Activation : int { kNone = 0, kTanh = 1, kRelu = 2, kSigmoid = 3 };

// Parses "none" / "tanh" / "relu" / "sigmoid"; `allowed_rnn` restricts to the RNN's "tanh" / "relu". Another name
// is an internal error: the public op checked it (the kernels assume checked arguments, see ops.cpp).
Activation parse_activation(const std::string& name, bool allowed_rnn);

// The C++ signature of each op's kernels, matching its schema in dopamine_fast/ops/specs.py (the dispatcher checks
// every kernel against that schema when Python defines it, and refuses two kernels of one op with different
// signatures); register with e.g.
// m.impl("noise_", static_cast<NoiseKernel*>(&noise_cpu)) so that a mismatch fails to compile instead.
using NoiseKernel = void(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id);
using PerturbedLinearKernel = at::Tensor(const at::Tensor& x, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, int64_t seed, int64_t step,
                                         int64_t weight_stream, int64_t bias_stream, double sigma,
                                         int64_t num_members, int64_t rank, bool baseline, bool antithetic,
                                         c10::string_view activation, int64_t first_member);
using PerturbedRnnKernel = at::Tensor(const at::Tensor& x, const std::optional<at::Tensor>& h0,
                                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                      const std::optional<at::Tensor>& bias_ih,
                                      const std::optional<at::Tensor>& bias_hh, int64_t seed, int64_t step,
                                      c10::IntArrayRef streams, double sigma, int64_t num_members, int64_t rank,
                                      bool baseline, bool antithetic, c10::string_view nonlinearity,
                                      bool return_sequence, int64_t first_member);
using RpeUpdateKernel = void(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step,
                             int64_t stream, int64_t rank, double alpha);
using PerturbKernel = void(const at::Tensor& param, int64_t seed, int64_t step, int64_t stream, int64_t noise_id,
                           int64_t rank, double alpha);

}  // namespace dopamine_fast
