// The dot product of the CPU kernels' row loops (low-rank factors, full-rank noise rows), in one place.
#pragma once

#include <cstdint>

namespace dopamine_fast {
namespace cpu {

// Partial sums per dot: independent chains, so the loop vectorises without reassociation flags and the FMAs'
// latency overlaps.
constexpr int kDotLanes = 32;

// Halves the partial sums W lanes at a time down to one; each level's trip count is a constant, so the compiler
// unrolls and vectorises it (a loop over the lanes, or over a variable width, compiled to scalar adds).
template <int W, typename T>
inline void fold_lanes(T* acc) {
  for (int l = 0; l < W; ++l) acc[l] += acc[l + W];
  if constexpr (W > 1) fold_lanes<W / 2>(acc);
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc[kDotLanes] = {};
  int64_t i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int l = 0; l < kDotLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  fold_lanes<kDotLanes / 2>(acc);
  return acc[0];
}

}  // namespace cpu
}  // namespace dopamine_fast
