// The compiled ops, called through the dispatcher as the package calls them: the CPU kernels registered by the
// linked kernel objects, typed with the kernel signatures of csrc/ops.h.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

namespace df_test {

template <typename Kernel>
c10::TypedOperatorHandle<Kernel> op(const std::string& name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(("dopamine_fast_C::" + name).c_str(), "").typed<Kernel>();
}

}  // namespace df_test
