// Declarations shared by the CPU (csrc/cpu/*.cpp) and CUDA (csrc/cuda/*.cu) kernels of dopamine_fast_C.
//
// Each kernel file registers its own implementations with TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU|CUDA, m) against
// the schemas Python defines from dopamine_fast/ops/specs.py; csrc/ops.cpp defines the argument checks below, so
// every device rejects bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>

#include "philox.h"

namespace dopamine_fast {

// Noise id and sign of member m (docs/noise.md, "Members"); the unperturbed member has id 0 and sign 0.
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

enum class Activation : int { kNone = 0, kTanh = 1, kRelu = 2, kSigmoid = 3 };

// Parses "none" / "tanh" / "relu" / "sigmoid"; `allowed_rnn` restricts to the RNN's "tanh" / "relu".
Activation parse_activation(const std::string& name, bool allowed_rnn);

// Checks shared by every device (defined in ops.cpp). They TORCH_CHECK with messages naming the argument.
void check_counter_args(int64_t seed, int64_t step, int64_t stream);
void check_noise_out(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id,
                     bool bits);
void check_perturbed_linear_args(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t seed, int64_t step,
                                 int64_t weight_stream, int64_t bias_stream, double sigma, int64_t num_members,
                                 int64_t rank);
void check_perturbed_rnn_args(const at::Tensor& x, const std::optional<at::Tensor>& h0,
                              const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                              const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                              int64_t seed, int64_t step, c10::IntArrayRef streams, double sigma,
                              int64_t num_members, int64_t rank);
void check_rpe_update_args(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step,
                           int64_t stream, int64_t rank);

// The C++ signature of each op's kernels, matching its schema in dopamine_fast/ops/specs.py (the dispatcher checks
// every kernel against that schema when Python defines it, and refuses two kernels of one op with different
// signatures); register with e.g.
// m.impl("noise_", static_cast<NoiseKernel*>(&noise_cpu)) so that a mismatch fails to compile instead.
using NoiseKernel = void(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id);
using PerturbedLinearKernel = at::Tensor(const at::Tensor& x, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, int64_t seed, int64_t step,
                                         int64_t weight_stream, int64_t bias_stream, double sigma,
                                         int64_t num_members, int64_t rank, bool baseline, bool antithetic,
                                         c10::string_view activation);
using PerturbedRnnKernel = at::Tensor(const at::Tensor& x, const std::optional<at::Tensor>& h0,
                                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                      const std::optional<at::Tensor>& bias_ih,
                                      const std::optional<at::Tensor>& bias_hh, int64_t seed, int64_t step,
                                      c10::IntArrayRef streams, double sigma, int64_t num_members, int64_t rank,
                                      bool baseline, bool antithetic, c10::string_view nonlinearity,
                                      bool return_sequence);
using RpeUpdateKernel = void(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step,
                             int64_t stream, int64_t rank, double alpha);
using PerturbKernel = void(const at::Tensor& param, int64_t seed, int64_t step, int64_t stream, int64_t noise_id,
                           int64_t rank, double alpha);

// Normals the noise of a parameter of `shape` takes per noise id: (out + in) * rank for a low-rank matrix
// (first dimension by the rest), its numel otherwise.
int64_t noise_numel(c10::IntArrayRef shape, int64_t rank);

}  // namespace dopamine_fast
