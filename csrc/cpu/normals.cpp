// Vectorisable Philox4x32-10 and Box-Muller over runs of blocks (see normals.h).
#include "normals.h"

#include <algorithm>
#include <cstring>

// Builds AVX-512 and AVX2 clones of the hot loops beside the portable one; the loader picks the best the CPU
// has, so one wheel runs on any x86-64 machine and still uses wide vectors where they exist.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define DF_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DF_SIMD_CLONES
#endif

namespace dopamine_fast {
namespace cpu {
namespace {

constexpr int kChunk = 64;  // blocks per vectorised chunk (256 elements)

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Philox of blocks block0 .. block0+n-1 (n <= kChunk), words in four arrays.
DF_SIMD_CLONES void philox_chunk(const NoiseKey key, uint32_t id, uint32_t block0, int n, uint32_t* __restrict w0,
                                 uint32_t* __restrict w1, uint32_t* __restrict w2, uint32_t* __restrict w3) {
  for (int i = 0; i < n; ++i) {
    uint32_t c0 = block0 + static_cast<uint32_t>(i), c1 = id, c2 = key.step, c3 = key.stream;
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
      const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    w0[i] = c0;
    w1[i] = c1;
    w2[i] = c2;
    w3[i] = c3;
  }
}

// log(k * 2^-24) for k in [1, 2^24]: k = m * 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1))
// by its series (|s| <= 0.172, so six terms reach float precision).
inline float log_uniform(uint32_t k) {
  const uint32_t bits = float_bits(static_cast<float>(k));
  int e = static_cast<int>(bits >> 23) - 127;
  float m = bits_float((bits & 0x007FFFFFu) | 0x3F800000u);
  const bool big = m > 1.41421356f;
  m = big ? 0.5f * m : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series =
      1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11)))));
  const float n = static_cast<float>(e - 24);
  // ln 2 split so that n * kLn2Hi is exact.
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860676533018e-06f;
  return n * kLn2Hi + (n * kLn2Lo + 2.0f * s * series);
}

// sin and cos of 2*pi*u, u = j * 2^-24 < 1, reduced exactly on the integer j: quadrant q = round(4u),
// t = 2*pi*(u - q/4) in [-pi/4, pi/4], then Taylor polynomials (their truncation error is below 1e-10).
inline void sincos_turns(uint32_t j, float& s_out, float& c_out) {
  const uint32_t qj = (j + (1u << 21)) >> 22;  // round(4u), in integers
  const int q = static_cast<int>(qj) & 3;
  const float t = static_cast<float>(static_cast<int32_t>(j - (qj << 22))) * kTwoPow24Inv * kTwoPi;
  const float t2 = t * t;
  const float sin_t =
      t + t * t2 * (-1.0f / 6 + t2 * (1.0f / 120 + t2 * (-1.0f / 5040 + t2 * (1.0f / 362880 + t2 * (-1.0f / 39916800)))));
  const float cos_t =
      1.0f + t2 * (-0.5f + t2 * (1.0f / 24 + t2 * (-1.0f / 720 + t2 * (1.0f / 40320 +
                                                                     t2 * (-1.0f / 3628800 + t2 * (1.0f / 479001600))))));
  const float a = (q & 1) ? cos_t : sin_t;  // |sin| of the angle
  const float b = (q & 1) ? sin_t : cos_t;  // |cos| of the angle, up to sign
  s_out = (q & 2) ? -a : a;
  c_out = ((q + 1) & 2) ? -b : b;
}

// Normals of blocks block0 .. block0+n-1 (n <= kChunk), interleaved: out[4 i + lane].
DF_SIMD_CLONES void normals_chunk(const NoiseKey key, uint32_t id, uint32_t block0, int n, float* __restrict out) {
  uint32_t w[4][kChunk];
  philox_chunk(key, id, block0, n, w[0], w[1], w[2], w[3]);
  float z[4][kChunk];
  for (int pair = 0; pair < 2; ++pair) {
    const uint32_t* __restrict xa = w[2 * pair];
    const uint32_t* __restrict xb = w[2 * pair + 1];
    float* __restrict zc = z[2 * pair];
    float* __restrict zs = z[2 * pair + 1];
    for (int i = 0; i < n; ++i) {
      const float r = std::sqrt(-2.0f * log_uniform((xa[i] >> 8) + 1u));
      float s, c;
      sincos_turns(xb[i] >> 8, s, c);
      zc[i] = r * c;
      zs[i] = r * s;
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int lane = 0; lane < 4; ++lane) out[4 * i + lane] = z[lane][i];
  }
}

template <typename T, typename Chunk>
void fill_run(int64_t first, int64_t count, T* dst, Chunk chunk) {
  T buf[4 * kChunk];
  int64_t e = first;
  const int64_t end = first + count;
  while (e < end) {
    const int64_t block0 = e >> 2;
    const int n = static_cast<int>(std::min<int64_t>(kChunk, ((end + 3) >> 2) - block0));
    const int64_t skip = e - 4 * block0;
    const int64_t take = std::min<int64_t>(4 * static_cast<int64_t>(n) - skip, end - e);
    if (skip == 0 && take == 4 * n) {
      chunk(static_cast<uint32_t>(block0), n, dst + (e - first));  // whole blocks: write in place
    } else {
      chunk(static_cast<uint32_t>(block0), n, buf);
      std::copy(buf + skip, buf + skip + take, dst + (e - first));
    }
    e += take;
  }
}

}  // namespace

void noise_words(const NoiseKey& key, uint32_t id, int64_t first, int64_t count, uint32_t* dst) {
  fill_run(first, count, dst, [&](uint32_t block0, int n, uint32_t* out) {
    uint32_t w[4][kChunk];
    philox_chunk(key, id, block0, n, w[0], w[1], w[2], w[3]);
    for (int i = 0; i < n; ++i) {
      for (int lane = 0; lane < 4; ++lane) out[4 * i + lane] = w[lane][i];
    }
  });
}

void noise_normals(const NoiseKey& key, uint32_t id, int64_t first, int64_t count, float* dst) {
  fill_run(first, count, dst,
           [&](uint32_t block0, int n, float* out) { normals_chunk(key, id, block0, n, out); });
}

}  // namespace cpu
}  // namespace dopamine_fast
