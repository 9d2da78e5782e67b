// Vectorisable Philox4x32-10 and Box-Muller over runs of blocks (see normals.h).
#include "normals.h"

#include "philox_blocks.h"
#include "simd_clones.h"

#include <algorithm>
#include <cstring>

namespace dopamine_fast {
namespace cpu {
namespace {

constexpr int kChunk = kPhiloxRun;  // blocks per vectorised chunk (256 elements)

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

// -2 log(k * 2^-24) for k in [1, 2^24], the square of Box-Muller's radius: k = m * 2^e with m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh((m-1)/(m+1)) by its series (|s| <= 0.172, so five terms reach float precision: a sixth
// would add under 1e-9). Offsetting the bits by 1.0's pattern less sqrt(1/2)'s moves mantissas of sqrt(2) or more
// into the next binade with integer work alone (as musl's logf does), and the factor -2 is folded into the constants.
inline float minus_two_log_uniform(uint32_t k) {
  constexpr uint32_t kOne = 0x3F800000u, kSqrtHalf = 0x3F3504F3u;
  const uint32_t bits = float_bits(static_cast<float>(k)) + (kOne - kSqrtHalf);
  const int e = static_cast<int>(bits >> 23) - 127;
  const float m = bits_float((bits & 0x007FFFFFu) + kSqrtHalf);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
  const float n = static_cast<float>(e - 24);
  // ln 2 split so that n * kLn2Hi is exact.
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860676533018e-06f;
  return n * (-2.0f * kLn2Hi) + (n * (-2.0f * kLn2Lo) + (-4.0f * s) * series);
}

// sin and cos of 2*pi*u, u = j * 2^-24 < 1, reduced exactly on the integer j: quadrant q = round(4u),
// t = 2*pi*(u - q/4) in [-pi/4, pi/4], then the minimax polynomials of Cephes' sinf and cosf on that interval
// (relative error about 1e-7: float rounding, with three terms each instead of the Taylor series' five and six).
inline void sincos_turns(uint32_t j, float& s_out, float& c_out) {
  const uint32_t qj = (j + (1u << 21)) >> 22;  // round(4u), in integers
  const int q = static_cast<int>(qj) & 3;
  // One multiply by 2 pi 2^-24: the same bits as by 2^-24 then 2 pi, since scaling by a power of two is exact.
  const float t = static_cast<float>(static_cast<int32_t>(j - (qj << 22))) * (kTwoPi * kTwoPow24Inv);
  const float t2 = t * t;
  const float sin_t = t + t * t2 * (-1.6666654611e-1f + t2 * (8.3321608736e-3f + t2 * -1.9515295891e-4f));
  const float cos_t =
      1.0f - 0.5f * t2 + t2 * t2 * (4.166664568298827e-2f + t2 * (-1.388731625493765e-3f + t2 * 2.443315711809948e-5f));
  const float a = (q & 1) ? cos_t : sin_t;  // |sin| of the angle
  const float b = (q & 1) ? sin_t : cos_t;  // |cos| of the angle, up to sign
  s_out = (q & 2) ? -a : a;
  c_out = ((q + 1) & 2) ? -b : b;
}

// Normals of blocks block0 .. block0+n-1 (n <= kChunk), interleaved: out[4 i + lane].
DF_SIMD_CLONES void normals_chunk(const NoiseKey key, uint32_t id, uint32_t block0, int n, float* __restrict out) {
  uint32_t w[4][kChunk];
  philox_blocks(key, id, block0, w[0], w[1], w[2], w[3]);
  float z[4][kChunk];
  for (int pair = 0; pair < 2; ++pair) {
    const uint32_t* __restrict xa = w[2 * pair];
    const uint32_t* __restrict xb = w[2 * pair + 1];
    float* __restrict zc = z[2 * pair];
    float* __restrict zs = z[2 * pair + 1];
    for (int i = 0; i < n; ++i) {
      const float r = std::sqrt(minus_two_log_uniform((xa[i] >> 8) + 1u));
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
    philox_blocks(key, id, block0, w[0], w[1], w[2], w[3]);
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
