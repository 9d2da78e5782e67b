// The Box-Muller transform of docs/noise.md (csrc/philox.h) against its formula in double precision, and the
// vectorised CPU generator (csrc/cpu/normals.h) against the scalar one on odd runs and against the formula.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../cpu/normals.h"
#include "../philox.h"
#include "harness.h"
#include "reference.h"

namespace {

// docs/noise.md: u1 = ((xa >> 8) + 1) 2^-24 in (0, 1], u2 = (xb >> 8) 2^-24 in [0, 1).
void expected_pair(uint32_t xa, uint32_t xb, double& z_cos, double& z_sin) {
  const double u1 = ((xa >> 8) + 1.0) * std::ldexp(1.0, -24);
  const double u2 = (xb >> 8) * std::ldexp(1.0, -24);
  const double r = std::sqrt(-2 * std::log(u1));
  z_cos = r * std::cos(2 * M_PI * u2);
  z_sin = r * std::sin(2 * M_PI * u2);
}

}  // namespace

DF_TEST(normal_transform, box_muller_formula) {
  // The extremes of both uniforms (largest radius 5.77 at xa < 2^8, zero at xa = 2^32 - 1; every quadrant of
  // the angle) and some words in between.
  const uint32_t words[] = {0u, 0xffu, 0x100u, 0x12345678u, 0x40000000u, 0x80000000u, 0xc0000000u, 0xdeadbeefu,
                            0xffffff00u, 0xffffffffu};
  for (uint32_t xa : words) {
    for (uint32_t xb : words) {
      float z_cos, z_sin;
      dopamine_fast::box_muller(xa, xb, z_cos, z_sin);
      double want_cos, want_sin;
      expected_pair(xa, xb, want_cos, want_sin);
      DF_CHECK_CLOSE(z_cos, want_cos, 1e-5, 1e-5) << "cos lane of " << xa << ", " << xb;
      DF_CHECK_CLOSE(z_sin, want_sin, 1e-5, 1e-5) << "sin lane of " << xa << ", " << xb;
    }
  }
  float z_cos, z_sin;
  dopamine_fast::box_muller(0u, 0u, z_cos, z_sin);
  DF_CHECK_CLOSE(z_cos, std::sqrt(2 * 24 * std::log(2.0)), 1e-5, 1e-5) << "the largest normal";
  DF_CHECK(z_sin == 0.0f) << "got " << z_sin;
}

DF_TEST(normal_transform, block_lanes) {
  // Lanes 0, 1 come from words (x0, x1), lanes 2, 3 from (x2, x3).
  const auto key = dopamine_fast::make_noise_key(123, 4, 5);
  const auto bits = dopamine_fast::noise_block_bits(key, 6, 7);
  const auto block = dopamine_fast::noise_block(key, 6, 7);
  double want[4];
  expected_pair(bits.x[0], bits.x[1], want[0], want[1]);
  expected_pair(bits.x[2], bits.x[3], want[2], want[3]);
  for (int i = 0; i < 4; ++i) DF_CHECK_CLOSE(block.z[i], want[i], 1e-5, 1e-5) << "lane " << i;
}

DF_TEST(normal_transform, vectorised_runs_match_scalar) {
  // Runs that start and end inside a block and span several of the generator's 256-element chunks.
  const df_test::Counter c{(int64_t{1} << 40) + 99, 31, 2};
  const auto key = dopamine_fast::make_noise_key(c.seed, c.step, c.stream);
  for (const int64_t first : {int64_t{0}, int64_t{3}, int64_t{1021}}) {
    for (const int64_t count : {int64_t{1}, int64_t{7}, int64_t{1001}}) {
      std::vector<uint32_t> words(count);
      std::vector<float> normals(count);
      dopamine_fast::cpu::noise_words(key, 9, first, count, words.data());
      dopamine_fast::cpu::noise_normals(key, 9, first, count, normals.data());
      for (int64_t i = 0; i < count; ++i) {
        DF_CHECK(words[i] == df_test::word(c, 9, first + i)) << "word of element " << first + i;
        DF_CHECK_CLOSE(normals[i], df_test::normal(c, 9, first + i), 1e-5, 1e-5) << "element " << first + i;
      }
    }
  }
}

DF_TEST(normal_transform, vectorised_normals_against_the_formula_in_double) {
  // The CPU generator's polynomials for log and sin/cos (csrc/cpu/normals.cpp) over 2^18 normals: every one within
  // 1e-6 of Box-Muller computed in double from the same words (6.1e-7 measured over 1.7e7 of them).
  const auto key = dopamine_fast::make_noise_key(11, 5, 1);
  const int64_t n = int64_t{1} << 18;
  std::vector<uint32_t> words(n);
  std::vector<float> normals(n);
  dopamine_fast::cpu::noise_words(key, 3, 0, n, words.data());
  dopamine_fast::cpu::noise_normals(key, 3, 0, n, normals.data());
  double worst = 0.0;
  for (int64_t e = 0; e < n; e += 2) {
    double want_cos, want_sin;
    expected_pair(words[e], words[e + 1], want_cos, want_sin);
    worst = std::max({worst, std::fabs(normals[e] - want_cos), std::fabs(normals[e + 1] - want_sin)});
  }
  DF_CHECK(worst <= 1e-6) << "largest error " << worst;
}
