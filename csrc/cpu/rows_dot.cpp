// Dot products of a few vectors with the rows of a generated stretch of noise (see rows_dot.h).
#include "rows_dot.h"

#include "dot.h"
#include "simd_clones.h"

namespace dopamine_fast {
namespace cpu {

// A SIMD clone, so that the inlined dot runs in the CPU's widest vectors.
DF_SIMD_CLONES void rows_dot(const float* e, int64_t rows, int64_t in, const float* x, int64_t nx,
                             int64_t x_stride, float* z, int64_t z_stride) {
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t j = 0; j < nx; ++j) z[j * z_stride + o] = dot(x + j * x_stride, e + o * in, in);
  }
}

}  // namespace cpu
}  // namespace dopamine_fast
