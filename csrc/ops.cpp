// What every device of the dopamine_fast_C ops shares: the activation names (the Python module is in
// python_module.cpp). The ops' schemas are not here: Python defines them from dopamine_fast/ops/specs.py (native.py),
// and the kernels in csrc/cpu and csrc/cuda register implementations only; the dispatcher checks each kernel's C++
// signature against the schema. The arguments are checked once, in Python, by the public op
// torch.ops.dopamine_fast.<op> (dopamine_fast/ops/validation.py): the kernels assume valid arguments, so a direct
// call of torch.ops.dopamine_fast_C.<op> is unchecked.
#include <torch/library.h>

#include <string>

#include "ops.h"

namespace dopamine_fast {

Activation parse_activation(const std::string& name, bool allowed_rnn) {
  if (name == "tanh") return Activation::kTanh;
  if (name == "relu") return Activation::kRelu;
  if (!allowed_rnn && name == "none") return Activation::kNone;
  if (!allowed_rnn && name == "sigmoid") return Activation::kSigmoid;
  TORCH_INTERNAL_ASSERT(false, "unknown activation '", name, "': the public op (ops/validation.py) refuses it");
}

}  // namespace dopamine_fast
