// Philox4x32-10 and the Box-Muller transform of docs/noise.md, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DF_HOST_DEVICE inline
#endif

namespace dopamine_fast {

struct Philox4 {
  uint32_t x[4];
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr float kTwoPi = 6.283185307179586f;
constexpr float kTwoPow24Inv = 5.9604644775390625e-08f;  // 2^-24

DF_HOST_DEVICE void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds; the key is bumped before every round but the first (Random123's philox4x32_R).
DF_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                      uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c0, hi0, lo0);
    mulhilo(kPhiloxM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Counter of element block `block` of noise id `id`: (block, id, step mod 2^32, stream); key = seed.
struct NoiseKey {
  uint32_t k0, k1, step, stream;
};

DF_HOST_DEVICE NoiseKey make_noise_key(int64_t seed, int64_t step, int64_t stream) {
  const uint64_t s = static_cast<uint64_t>(seed);
  return NoiseKey{static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32), static_cast<uint32_t>(step),
                  static_cast<uint32_t>(stream)};
}

DF_HOST_DEVICE Philox4 noise_block_bits(const NoiseKey& key, uint32_t id, uint32_t block) {
  return philox4x32_10(block, id, key.step, key.stream, key.k0, key.k1);
}

// Two normals from two words: z[0] = r cos(theta), z[1] = r sin(theta).
DF_HOST_DEVICE void box_muller(uint32_t xa, uint32_t xb, float& z_cos, float& z_sin) {
  const float u1 = static_cast<float>((xa >> 8) + 1u) * kTwoPow24Inv;
  const float u2 = static_cast<float>(xb >> 8) * kTwoPow24Inv;
#if defined(__CUDACC__)
  const float r = sqrtf(-2.0f * logf(u1));
  float s, c;
  sincosf(kTwoPi * u2, &s, &c);
#else
  const float r = std::sqrt(-2.0f * std::log(u1));
  const float theta = kTwoPi * u2;
  const float s = std::sin(theta), c = std::cos(theta);
#endif
  z_cos = r * c;
  z_sin = r * s;
}

// The four normals of one block (elements 4*block .. 4*block+3).
struct Normal4 {
  float z[4];
};

DF_HOST_DEVICE Normal4 noise_block(const NoiseKey& key, uint32_t id, uint32_t block) {
  const Philox4 b = noise_block_bits(key, id, block);
  Normal4 n;
  box_muller(b.x[0], b.x[1], n.z[0], n.z[1]);
  box_muller(b.x[2], b.x[3], n.z[2], n.z[3]);
  return n;
}

}  // namespace dopamine_fast
