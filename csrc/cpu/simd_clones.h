// DF_SIMD_CLONES: builds AVX-512 and AVX2 clones of a hot loop beside the portable one; the loader picks the best
// the CPU has, so one wheel runs on any x86-64 machine and still uses wide vectors where they exist.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define DF_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DF_SIMD_CLONES
#endif
