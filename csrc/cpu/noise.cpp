// CPU kernels of noise_ and noise_bits_: rows are noise ids first_id.., columns elements of the stream.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "normals.h"
#include "parallel.h"

namespace dopamine_fast {
namespace {

constexpr int64_t kRun = 4096;  // elements one task generates at a time (fits in L1 with its buffer)

// Calls fill(id, first, count, buffer) for runs of every row in parallel and scatters each run into `out`
// through its strides, so strided views are written in place and nothing around them is touched.
template <typename Word, typename Out, typename Fill>
void fill_rows(const at::Tensor& out, const NoiseKey& key, int64_t first_id, Fill fill) {
  const int64_t rows = out.size(0), cols = out.size(1);
  if (rows == 0 || cols == 0) return;
  const int64_t runs_per_row = (cols + kRun - 1) / kRun;
  Out* base = out.data_ptr<Out>();
  const int64_t s0 = out.stride(0), s1 = out.stride(1);
  cpu::parallel_for(0, rows * runs_per_row, 1, [&](int64_t begin, int64_t end) {
    std::vector<Word> buf(kRun);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / runs_per_row;
      const int64_t first = (task % runs_per_row) * kRun;
      const int64_t count = std::min(kRun, cols - first);
      Out* dst = base + row * s0 + first * s1;
      if constexpr (std::is_same<Word, Out>::value) {
        if (s1 == 1) {  // a contiguous float32 row: generated in place (the copy cost a fifth of the call)
          fill(key, static_cast<uint32_t>(first_id + row), first, count, dst);
          continue;
        }
      }
      fill(key, static_cast<uint32_t>(first_id + row), first, count, buf.data());
      for (int64_t i = 0; i < count; ++i) dst[i * s1] = static_cast<Out>(buf[i]);
    }
  });
}

void noise_cpu(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  const NoiseKey key = make_noise_key(seed, step, stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "noise_", [&] {
    fill_rows<float, scalar_t>(out, key, first_id, cpu::noise_normals);
  });
}

void noise_bits_cpu(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  fill_rows<uint32_t, int64_t>(out, make_noise_key(seed, step, stream), first_id, cpu::noise_words);
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU, m) {
  m.impl("noise_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::noise_cpu));
  m.impl("noise_bits_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::noise_bits_cpu));
}
