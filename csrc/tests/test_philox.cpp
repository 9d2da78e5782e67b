// Philox4x32-10 (csrc/philox.h) against Random123's published known-answer vectors, and the counter and key
// layout of docs/noise.md.
#include <cstdint>

#include "../philox.h"
#include "harness.h"

namespace {

using dopamine_fast::Philox4;

struct KnownAnswer {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

// Random123 (D. E. Shaw Research), tests/kat_vectors, the three "philox4x32 10" lines: counter, key, output.
constexpr KnownAnswer kKnownAnswers[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u}, {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

}  // namespace

DF_TEST(philox, known_answer_vectors) {
  for (const auto& v : kKnownAnswers) {
    const Philox4 out = dopamine_fast::philox4x32_10(v.counter[0], v.counter[1], v.counter[2], v.counter[3],
                                                     v.key[0], v.key[1]);
    for (int i = 0; i < 4; ++i) {
      DF_CHECK(out.x[i] == v.expected[i]) << std::hex << "word " << i << " of counter " << v.counter[0] << ": got "
                                          << out.x[i] << ", expected " << v.expected[i];
    }
  }
}

DF_TEST(philox, counter_and_key_layout) {
  // docs/noise.md: key = (seed low, seed high); counter = (block, id, step mod 2^32, stream).
  const int64_t seed = (int64_t{0x12345678} << 32) | 0x9abcdef0;
  const int64_t step = (int64_t{3} << 32) + 17;  // wraps to 17
  const auto key = dopamine_fast::make_noise_key(seed, step, 5);
  const Philox4 got = dopamine_fast::noise_block_bits(key, /*id=*/11, /*block=*/7);
  const Philox4 want = dopamine_fast::philox4x32_10(7, 11, 17, 5, 0x9abcdef0u, 0x12345678u);
  for (int i = 0; i < 4; ++i) DF_CHECK(got.x[i] == want.x[i]) << "word " << i;
}
