// Philox4x32-10 over runs of blocks: AVX-512 and AVX2 paths chosen once at run time, a portable loop elsewhere.
#include "philox_blocks.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DF_X86_SIMD 1
#include <immintrin.h>
#endif

namespace dopamine_fast {
namespace cpu {
namespace {

void philox_portable(const NoiseKey& key, uint32_t id, uint32_t block0, uint32_t* __restrict w0,
                     uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3) {
  for (int i = 0; i < kPhiloxRun; ++i) {
    const Philox4 b = noise_block_bits(key, id, block0 + static_cast<uint32_t>(i));
    w0[i] = b.x[0];
    w1[i] = b.x[1];
    w2[i] = b.x[2];
    w3[i] = b.x[3];
  }
}

#ifdef DF_X86_SIMD

// One block per 64-bit lane, its words in the low halves: vpmuludq then yields each whole product, hi = p >> 32 and
// lo = p as it stands, because the multiplies read only the low halves and the words are stored through a
// truncation, so whatever the high halves hold never matters. Six operations a round for 8 blocks, against eight
// for packing 16 blocks into 32-bit lanes (which needs shifts and blends to split the products).
__attribute__((target("avx512f"))) void philox_avx512(const NoiseKey& key, uint32_t id, uint32_t block0,
                                                      uint32_t* __restrict w0, uint32_t* __restrict w1,
                                                      uint32_t* __restrict w2, uint32_t* __restrict w3) {
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0);
  const __m512i m1 = _mm512_set1_epi64(kPhiloxM1);
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  constexpr int kVectors = 4;  // independent vectors per pass hide the multiplies' latency
  for (int pass = 0; pass < kPhiloxRun / (8 * kVectors); ++pass) {
    const uint32_t first = block0 + static_cast<uint32_t>(pass * 8 * kVectors);
    __m512i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      // Block counters wrap at 2^32 like philox.h's: only the low halves are ever read.
      c0[v] = _mm512_add_epi64(_mm512_set1_epi64(first + 8u * v), lane);
      c1[v] = _mm512_set1_epi64(id);
      c2[v] = _mm512_set1_epi64(key.step);
      c3[v] = _mm512_set1_epi64(key.stream);
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
      const __m512i vk0 = _mm512_set1_epi64(k0);
      const __m512i vk1 = _mm512_set1_epi64(k1);
      for (int v = 0; v < kVectors; ++v) {
        const __m512i p0 = _mm512_mul_epu32(c0[v], m0);
        const __m512i p1 = _mm512_mul_epu32(c2[v], m1);
        c0[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), c1[v], vk0, 0x96);  // three-way xor
        c2[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), c3[v], vk1, 0x96);
        c1[v] = p1;
        c3[v] = p0;
      }
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const int at = pass * 8 * kVectors;
    for (int v = 0; v < kVectors; ++v) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + at + 8 * v), _mm512_cvtepi64_epi32(c0[v]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + at + 8 * v), _mm512_cvtepi64_epi32(c1[v]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + at + 8 * v), _mm512_cvtepi64_epi32(c2[v]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + at + 8 * v), _mm512_cvtepi64_epi32(c3[v]));
    }
  }
}

__attribute__((target("avx2"))) inline void mulhilo8(__m256i m, __m256i a, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2"))) void philox_avx2(const NoiseKey& key, uint32_t id, uint32_t block0,
                                                 uint32_t* __restrict w0, uint32_t* __restrict w1,
                                                 uint32_t* __restrict w2, uint32_t* __restrict w3) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  constexpr int kVectors = 4;  // 32 blocks per pass, two passes
  for (int pass = 0; pass < kPhiloxRun / (8 * kVectors); ++pass) {
    const uint32_t first = block0 + static_cast<uint32_t>(pass * 8 * kVectors);
    __m256i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      c0[v] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first + 8u * v)), lane);
      c1[v] = _mm256_set1_epi32(static_cast<int>(id));
      c2[v] = _mm256_set1_epi32(static_cast<int>(key.step));
      c3[v] = _mm256_set1_epi32(static_cast<int>(key.stream));
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
      const __m256i vk0 = _mm256_set1_epi32(static_cast<int>(k0));
      const __m256i vk1 = _mm256_set1_epi32(static_cast<int>(k1));
      for (int v = 0; v < kVectors; ++v) {
        __m256i hi0, lo0, hi1, lo1;
        mulhilo8(m0, c0[v], hi0, lo0);
        mulhilo8(m1, c2[v], hi1, lo1);
        c0[v] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[v]), vk0);
        c2[v] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[v]), vk1);
        c1[v] = lo1;
        c3[v] = lo0;
      }
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const int at = pass * 8 * kVectors;
    for (int v = 0; v < kVectors; ++v) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + at + 8 * v), c0[v]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + at + 8 * v), c1[v]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + at + 8 * v), c2[v]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + at + 8 * v), c3[v]);
    }
  }
}

#endif  // DF_X86_SIMD

using PhiloxFn = void (*)(const NoiseKey&, uint32_t, uint32_t, uint32_t*, uint32_t*, uint32_t*, uint32_t*);

PhiloxFn implementation(PhiloxIsa isa) {
  switch (isa) {
#ifdef DF_X86_SIMD
    case PhiloxIsa::kAvx512:
      return philox_avx512;
    case PhiloxIsa::kAvx2:
      return philox_avx2;
#endif
    default:
      return philox_portable;
  }
}

PhiloxIsa widest() {
#ifdef DF_X86_SIMD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return PhiloxIsa::kAvx512;
  if (__builtin_cpu_supports("avx2")) return PhiloxIsa::kAvx2;
#endif
  return PhiloxIsa::kPortable;
}

}  // namespace

PhiloxIsa philox_isa() {
  static const PhiloxIsa isa = widest();
  return isa;
}

bool philox_isa_supported(PhiloxIsa isa) { return static_cast<int>(isa) <= static_cast<int>(philox_isa()); }

const char* philox_isa_name(PhiloxIsa isa) {
  switch (isa) {
    case PhiloxIsa::kAvx512:
      return "avx512";
    case PhiloxIsa::kAvx2:
      return "avx2";
    default:
      return "portable";
  }
}

void philox_blocks_with(PhiloxIsa isa, const NoiseKey& key, uint32_t id, uint32_t block0, uint32_t* __restrict w0,
                        uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3) {
  implementation(isa)(key, id, block0, w0, w1, w2, w3);
}

void philox_blocks(const NoiseKey& key, uint32_t id, uint32_t block0, uint32_t* __restrict w0,
                   uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3) {
  static const PhiloxFn fn = implementation(philox_isa());
  fn(key, id, block0, w0, w1, w2, w3);
}

}  // namespace cpu
}  // namespace dopamine_fast
