// z[j][o] = x_j . e_o for a few vectors x_j and a stretch of rows e_o still in cache: the full-rank kernel's
// x E^T at small batch, taken while each generated stretch of E is in L1 instead of by a GEMV over all of it.
#pragma once

#include <cstdint>

namespace dopamine_fast {
namespace cpu {

// e: [rows, in] contiguous; x_j at x + j * x_stride (in long); z_j at z + j * z_stride, rows long.
void rows_dot(const float* e, int64_t rows, int64_t in, const float* x, int64_t nx, int64_t x_stride, float* z,
              int64_t z_stride);

}  // namespace cpu
}  // namespace dopamine_fast
