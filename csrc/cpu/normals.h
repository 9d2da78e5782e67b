// Batched noise generation on the CPU: the words and normals of a run of elements of one noise id.
//
// The scalar helpers of philox.h compute one block at a time; these fill whole runs in structure-of-arrays
// chunks so the compiler vectorises Philox and Box-Muller (log and sin/cos are evaluated with polynomials
// here, because the libm calls do not vectorise).
#pragma once

#include <cstdint>

#include "../philox.h"

namespace dopamine_fast {
namespace cpu {

// Raw Philox word of elements [first, first + count) of noise id `id`: dst[i] is element first + i.
void noise_words(const NoiseKey& key, uint32_t id, int64_t first, int64_t count, uint32_t* dst);

// Float32 normals of the same elements.
void noise_normals(const NoiseKey& key, uint32_t id, int64_t first, int64_t count, float* dst);

}  // namespace cpu
}  // namespace dopamine_fast
