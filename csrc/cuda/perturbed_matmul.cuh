// The full-rank perturbed layers on the GPU (perturbed_linear, and each step of perturbed_rnn):
// y_m = act(x_m Wp_m^T + b_m) by a tiled kernel that regenerates each tile of the noise E in shared memory, so the
// K perturbed weight matrices never exist in memory (csrc/cuda/perturbed_matmul.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "../ops.h"

namespace dopamine_fast {
namespace cuda {

// One operand pair of the reduction: rows of x (per member, or shared) against a weight [out, in] whose
// perturbation is regenerated from `stream`. An RNN step has two: (x_t, W_ih) and (h_{t-1}, W_hh).
template <typename T>
struct Segment {
  const T* x;        // element (m, b, i) at x[m * x_member + b * x_row + i]
  int64_t x_member;  // 0 when every member reads the same rows
  int64_t x_row;
  const T* w;  // [out, in], contiguous
  int64_t in;
  uint32_t stream;
};

template <typename T>
struct MatmulParams {
  Segment<T> seg[2];
  int num_seg;
  const T* bias[2];  // nullptr when absent; each gets its own full-rank noise
  uint32_t bias_stream[2];
  T* y;  // element (m, b, o) at y[m * y_member + b * y_row + o]
  int64_t y_member, y_row;
  int64_t rows, out;
  int64_t first_member, members;  // the call's members: first_member .. first_member + members - 1
  NoiseKey key;  // seed and step; the stream comes from each segment and bias
  T sigma;
  bool baseline;
  int activation;
};

// Launches the kernel over every noise-id slot, output tile and row tile of `p`; instantiated for float and double.
template <typename T>
void launch_perturbed_matmul(const MatmulParams<T>& p, bool antithetic);

template <typename T>
Segment<T> segment(const at::Tensor& x, int64_t x_member, int64_t x_row, int64_t x_offset, const at::Tensor& w,
                   int64_t stream) {
  return Segment<T>{x.data_ptr<T>() + x_offset, x_member, x_row, w.data_ptr<T>(), w.size(1),
                    static_cast<uint32_t>(stream)};
}

template <typename T>
MatmulParams<T> base_params(const std::optional<at::Tensor>& b0, int64_t s0, const std::optional<at::Tensor>& b1,
                            int64_t s1, const NoiseKey& key, double sigma, int64_t first_member, int64_t members,
                            bool baseline, int act) {
  MatmulParams<T> p{};
  p.bias[0] = b0.has_value() ? b0->data_ptr<T>() : nullptr;
  p.bias[1] = b1.has_value() ? b1->data_ptr<T>() : nullptr;
  p.bias_stream[0] = static_cast<uint32_t>(s0);
  p.bias_stream[1] = static_cast<uint32_t>(s1);
  p.key = key;
  p.sigma = static_cast<T>(sigma);
  p.first_member = first_member;
  p.members = members;
  p.baseline = baseline;
  p.activation = act;
  return p;
}

}  // namespace cuda
}  // namespace dopamine_fast
