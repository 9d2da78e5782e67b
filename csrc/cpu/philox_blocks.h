// Philox4x32-10 of a run of consecutive blocks of one noise id, in the widest vectors the CPU has.
//
// Every CPU kernel's noise goes through here (via normals.h), so this loop bounds them all. Compilers widen the
// scalar 32x32->64-bit products of philox.h into 64-bit lanes and spend most of the loop shuffling, so the x86
// paths are written with intrinsics (16 blocks per AVX-512 vector, 8 per AVX2 vector); the words are the same
// bits as philox.h's, which the tests check.
#pragma once

#include <cstdint>

#include "../philox.h"

namespace dopamine_fast {
namespace cpu {

constexpr int kPhiloxRun = 64;  // blocks per call

enum class PhiloxIsa { kPortable, kAvx2, kAvx512 };

// The four words of blocks block0 .. block0 + kPhiloxRun - 1, w<j>[i] = word j of block block0 + i, in the
// widest implementation this CPU runs.
void philox_blocks(const NoiseKey& key, uint32_t id, uint32_t block0, uint32_t* __restrict w0,
                   uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3);

// The implementation philox_blocks uses, and whether this CPU (and build) can run a given one.
PhiloxIsa philox_isa();
bool philox_isa_supported(PhiloxIsa isa);
const char* philox_isa_name(PhiloxIsa isa);

// philox_blocks in a chosen implementation, for tests of every one the CPU has; isa must be supported.
void philox_blocks_with(PhiloxIsa isa, const NoiseKey& key, uint32_t id, uint32_t block0, uint32_t* __restrict w0,
                        uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3);

}  // namespace cpu
}  // namespace dopamine_fast
