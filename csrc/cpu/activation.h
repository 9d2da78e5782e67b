// Activations applied in place with ATen's vectorised kernels (the same functions the references call).
#pragma once

#include <ATen/ATen.h>

#include "../ops.h"

namespace dopamine_fast {
namespace cpu {

inline void apply_activation_(at::Tensor& y, Activation act) {
  switch (act) {
    case Activation::kNone:
      break;
    case Activation::kTanh:
      y.tanh_();
      break;
    case Activation::kRelu:
      y.relu_();
      break;
    case Activation::kSigmoid:
      y.sigmoid_();
      break;
  }
}

}  // namespace cpu
}  // namespace dopamine_fast
