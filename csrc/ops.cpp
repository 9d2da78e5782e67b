// The argument checks every device of the dopamine_fast_C ops shares. The ops' schemas are not here: Python
// defines them from dopamine_fast/ops/specs.py (dopamine_fast/backends/native.py), and the kernels in csrc/cpu and
// csrc/cuda register implementations only; the dispatcher checks each kernel's C++ signature against the schema.
#include <torch/library.h>

#include <ATen/MemoryOverlap.h>

#include <cmath>
#include <string>

#include "ops.h"

namespace dopamine_fast {

namespace {
constexpr int64_t kMaxWord = (int64_t{1} << 32) - 1;
constexpr int64_t kMaxNumel = int64_t{4} << 32;  // four elements per block, 2^32 blocks

// first_id + rows for an error message, exact where the int64 sum would overflow (rows >= 0).
std::string id_range_end(int64_t first_id, int64_t rows) {
  if (first_id < 0) return std::to_string(first_id + rows);
  return std::to_string(static_cast<uint64_t>(first_id) + static_cast<uint64_t>(rows));
}

// A written tensor whose elements share memory (a stride-0 dimension, e.g. expand()) would race and lose writes.
void check_written(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(at::has_internal_overlap(t) != at::MemOverlap::Yes, name,
                    " has elements that share memory (an expand()-ed view?); clone() it before writing into it");
}
}  // namespace

Activation parse_activation(const std::string& name, bool allowed_rnn) {
  if (name == "tanh") return Activation::kTanh;
  if (name == "relu") return Activation::kRelu;
  if (!allowed_rnn && name == "none") return Activation::kNone;
  if (!allowed_rnn && name == "sigmoid") return Activation::kSigmoid;
  TORCH_CHECK_VALUE(false, allowed_rnn ? "nonlinearity must be 'tanh' or 'relu', got '"
                                       : "activation must be one of 'none', 'tanh', 'relu', 'sigmoid', got '",
                    name, "'");
}

void check_counter_args(int64_t seed, int64_t step, int64_t stream) {
  TORCH_CHECK_VALUE(seed >= 0, "seed must be in [0, 2**63), got ", seed);
  TORCH_CHECK_VALUE(step >= 0, "step must be >= 0, got ", step);
  TORCH_CHECK_VALUE(stream >= 0 && stream <= kMaxWord, "stream must be in [0, 2**32), got ", stream);
}

void check_noise_out(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id,
                     bool bits) {
  check_counter_args(seed, step, stream);
  TORCH_CHECK_VALUE(out.dim() == 2, "out must be 2-D [num_ids, numel], got shape ", out.sizes());
  if (bits) {
    TORCH_CHECK_VALUE(out.scalar_type() == at::kLong, "out of noise_bits_ must be int64, got ",
                      out.scalar_type());
  } else {
    TORCH_CHECK_VALUE(at::isFloatingType(out.scalar_type()), "out of noise_ must be floating point, got ",
                      out.scalar_type());
  }
  // Compared as a difference: first_id + rows can overflow int64.
  const int64_t rows = out.size(0);
  TORCH_CHECK_VALUE(first_id >= 0 && first_id <= kMaxWord + 1 && rows <= kMaxWord + 1 - first_id, "noise ids [",
                    first_id, ", ", id_range_end(first_id, rows), ") must lie in [0, 2**32)");
  TORCH_CHECK_VALUE(out.size(1) <= kMaxNumel, "numel must be at most 2**34, got ", out.size(1));
  check_written(out, "out");
}

namespace {

void check_common(double sigma, int64_t num_members, int64_t rank) {
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma >= 0, "sigma must be a finite number >= 0, got ", sigma);
  TORCH_CHECK_VALUE(num_members >= 1, "num_members must be >= 1, got ", num_members);
  TORCH_CHECK_VALUE(num_members <= kMaxWord, "num_members must be below 2**32, got ", num_members);
  TORCH_CHECK_VALUE(rank >= 0, "rank must be >= 0 (0 is full rank), got ", rank);
}

void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name, " must be floating point, got ", t.scalar_type());
}

void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " on ",
                    ref.device());
}

void check_vector(const std::optional<at::Tensor>& b, const at::Tensor& weight, int64_t n, const char* name,
                  const char* weight_name) {
  if (!b.has_value()) return;
  TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == n, name, " must have shape (", n, ",), got ", b->sizes());
  check_floating(*b, name);
  check_same_device(*b, weight, name, weight_name);
}

}  // namespace

void check_perturbed_linear_args(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t seed, int64_t step,
                                 int64_t weight_stream, int64_t bias_stream, double sigma, int64_t num_members,
                                 int64_t rank) {
  check_common(sigma, num_members, rank);
  check_counter_args(seed, step, weight_stream);
  check_counter_args(seed, step, bias_stream);
  TORCH_CHECK_VALUE(weight.dim() == 2, "weight must be 2-D [out, in], got shape ", weight.sizes());
  check_floating(weight, "weight");
  const int64_t in = weight.size(1);
  TORCH_CHECK_VALUE(
      (x.dim() == 2 || x.dim() == 3) && x.size(-1) == in && (x.dim() == 2 || x.size(0) == num_members),
      "x must be [B, ", in, "] or [", num_members, ", B, ", in, "] for weight ", weight.sizes(),
      " and num_members=", num_members, ", got ", x.sizes());
  check_floating(x, "x");
  check_same_device(x, weight, "x", "weight");
  check_vector(bias, weight, weight.size(0), "bias", "weight");
}

void check_perturbed_rnn_args(const at::Tensor& x, const std::optional<at::Tensor>& h0,
                              const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                              const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                              int64_t seed, int64_t step, c10::IntArrayRef streams, double sigma,
                              int64_t num_members, int64_t rank) {
  check_common(sigma, num_members, rank);
  TORCH_CHECK_VALUE(streams.size() == 4, "streams must hold 4 ints (weight_ih, weight_hh, bias_ih, bias_hh), got ",
                    streams);
  for (int64_t s : streams) check_counter_args(seed, step, s);
  TORCH_CHECK_VALUE(weight_hh.dim() == 2 && weight_hh.size(0) == weight_hh.size(1),
                    "weight_hh must be [H, H], got shape ", weight_hh.sizes());
  const int64_t hidden = weight_hh.size(0);
  TORCH_CHECK_VALUE(weight_ih.dim() == 2 && weight_ih.size(0) == hidden, "weight_ih must be [", hidden,
                    ", in], got shape ", weight_ih.sizes());
  check_floating(weight_hh, "weight_hh");
  check_floating(weight_ih, "weight_ih");
  check_same_device(weight_ih, weight_hh, "weight_ih", "weight_hh");
  const int64_t in = weight_ih.size(1);
  TORCH_CHECK_VALUE(
      (x.dim() == 3 || x.dim() == 4) && x.size(-1) == in && (x.dim() == 3 || x.size(0) == num_members),
      "x must be [B, T, ", in, "] or [", num_members, ", B, T, ", in, "], got ", x.sizes());
  check_floating(x, "x");
  check_same_device(x, weight_hh, "x", "weight_hh");
  if (h0.has_value()) {
    TORCH_CHECK_VALUE((h0->dim() == 2 || (h0->dim() == 3 && h0->size(0) == num_members)) &&
                          h0->size(-1) == hidden && h0->size(-2) == x.size(-3),
                      "h0 must be [B, ", hidden, "] or [", num_members, ", B, ", hidden, "], got ", h0->sizes());
    check_floating(*h0, "h0");
    check_same_device(*h0, weight_hh, "h0", "weight_hh");
  }
  check_vector(bias_ih, weight_hh, hidden, "bias_ih", "weight_hh");
  check_vector(bias_hh, weight_hh, hidden, "bias_hh", "weight_hh");
}

void check_rpe_update_args(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step,
                           int64_t stream, int64_t rank) {
  check_counter_args(seed, step, stream);
  TORCH_CHECK_VALUE(rank >= 0, "rank must be >= 0 (0 is full rank), got ", rank);
  check_floating(param, "param");
  TORCH_CHECK_VALUE(coeffs.dim() == 1, "coeffs must be 1-D (one per noise id), got shape ", coeffs.sizes());
  TORCH_CHECK_VALUE(coeffs.numel() <= kMaxWord + 1, "coeffs must hold at most 2**32 noise ids, got ",
                    coeffs.numel());
  check_floating(coeffs, "coeffs");
  check_same_device(coeffs, param, "coeffs", "param");
  TORCH_CHECK_VALUE(param.numel() <= kMaxNumel, "param must have at most 2**34 elements, got ", param.numel());
  check_written(param, "param");
}

int64_t noise_numel(c10::IntArrayRef shape, int64_t rank) {
  int64_t rest = 1;
  for (size_t i = 1; i < shape.size(); ++i) rest *= shape[i];
  const int64_t out = shape.empty() ? 1 : shape[0];
  if (rank == 0 || shape.size() < 2) return out * rest;
  return (out + rest) * rank;
}

}  // namespace dopamine_fast
