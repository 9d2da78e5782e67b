// at::parallel_for for the kernels: every chunk runs below autograd, whichever thread runs it.
//
// Autograd state is thread-local: the calling thread dispatches a kernel below autograd, but at::parallel_for's
// worker threads start with grad mode on and autograd in the dispatch path, so an in-place ATen op there on a
// tensor that requires grad (a module's parameter) fails with "a leaf Variable that requires grad is being used
// in an in-place operation". The kernels also detach their inputs; the guard keeps worker threads equivalent to
// the calling one, and keeps autograd's per-op bookkeeping out of the kernels' inner ATen calls.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <cstdint>

namespace dopamine_fast {
namespace cpu {

template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  at::parallel_for(begin, end, grain_size, [&](int64_t b, int64_t e) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    f(b, e);
  });
}

}  // namespace cpu
}  // namespace dopamine_fast
