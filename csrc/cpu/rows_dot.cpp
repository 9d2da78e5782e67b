// Dot products of a few vectors with the rows of a generated stretch of noise (see rows_dot.h).
#include "rows_dot.h"

#include "simd_clones.h"

namespace dopamine_fast {
namespace cpu {
namespace {

// Partial sums per dot: two vectors' worth of independent chains, so the loop vectorises without reassociation
// and the FMAs' latency overlaps; then summed as a tree, not one lane after another.
constexpr int kLanes = 32;

// Halves the partial sums W lanes at a time down to one; each level's trip count is a constant, so the compiler
// unrolls and vectorises it (a loop over a variable width compiled to scalar adds through the stack).
template <int W>
inline void fold(float* acc) {
  for (int l = 0; l < W; ++l) acc[l] += acc[l + W];
  if constexpr (W > 1) fold<W / 2>(acc);
}

inline float tree_sum(float* acc) {
  fold<kLanes / 2>(acc);
  return acc[0];
}

// The NX dots of one row of e with x_0 .. x_{NX-1}, each element of e loaded once for all of them.
template <int NX>
inline void row_dots(const float* __restrict e, int64_t in, const float* __restrict x, int64_t x_stride,
                     float* __restrict z, int64_t z_stride) {
  float acc[NX][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= in; i += kLanes) {
    for (int j = 0; j < NX; ++j) {
      for (int l = 0; l < kLanes; ++l) acc[j][l] += x[j * x_stride + i + l] * e[i + l];
    }
  }
  for (int l = 0; i < in; ++i, ++l) {
    for (int j = 0; j < NX; ++j) acc[j][l] += x[j * x_stride + i] * e[i];
  }
  for (int j = 0; j < NX; ++j) z[j * z_stride] = tree_sum(acc[j]);
}

}  // namespace

DF_SIMD_CLONES void rows_dot(const float* e, int64_t rows, int64_t in, const float* x, int64_t nx,
                             int64_t x_stride, float* z, int64_t z_stride) {
  for (int64_t o = 0; o < rows; ++o) {
    // Pairs of inputs (an antithetic pair's two members) share each row's loads; an odd one goes alone.
    int64_t j = 0;
    for (; j + 2 <= nx; j += 2) row_dots<2>(e + o * in, in, x + j * x_stride, x_stride, z + j * z_stride + o, z_stride);
    if (j < nx) row_dots<1>(e + o * in, in, x + j * x_stride, x_stride, z + j * z_stride + o, z_stride);
  }
}

}  // namespace cpu
}  // namespace dopamine_fast
