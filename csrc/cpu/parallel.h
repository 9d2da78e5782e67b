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

#include <algorithm>
#include <cstdint>

namespace dopamine_fast {
namespace cpu {

//
// A range that makes one task would run on a team of one thread, where MKL (called by the kernels' GEMMs) sees no
// active parallel region and may thread the GEMM itself: its rounding then differs from the same GEMM run inside a
// wider team, and a member evaluated in a call of one task would not get the bits it gets in a whole call. So a
// single task runs on a team of two (the second idles) whenever more than one thread is available.
template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  const auto body = [&](int64_t b, int64_t e) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    f(b, e);
  };
  const int64_t tasks = (end - begin + std::max<int64_t>(grain_size, 1) - 1) / std::max<int64_t>(grain_size, 1);
  if (end > begin && tasks == 1 && at::get_num_threads() > 1 && !at::in_parallel_region()) {
    at::parallel_for(0, 2, 1, [&](int64_t b, int64_t) {
      if (b == 0) body(begin, end);
    });
    return;
  }
  at::parallel_for(begin, end, grain_size, body);
}

}  // namespace cpu
}  // namespace dopamine_fast
