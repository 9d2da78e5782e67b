// Philox4x32-10 (csrc/philox.h) against Random123's published known-answer vectors, the counter and key layout of
// docs/noise.md, and the CPU's vectorised runs of blocks against it.
#include <cstdint>
#include <initializer_list>

#include "../cpu/philox_blocks.h"
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

DF_TEST(philox, runs_of_blocks_in_every_isa_this_cpu_has) {
  // csrc/cpu/philox_blocks.h: each vectorised path (AVX-512, AVX2) and the portable loop give philox.h's words,
  // including runs that wrap the block counter past 2^32 - 1.
  using dopamine_fast::cpu::PhiloxIsa;
  const auto key = dopamine_fast::make_noise_key((int64_t{0x0badf00d} << 32) | 0xfeedbeef, 1234567, 3);
  int checked = 0;
  for (const PhiloxIsa isa : {PhiloxIsa::kPortable, PhiloxIsa::kAvx2, PhiloxIsa::kAvx512}) {
    if (!dopamine_fast::cpu::philox_isa_supported(isa)) continue;
    ++checked;
    for (const uint32_t block0 : {0u, 5u, 0x7fffffe3u, 0xffffffe0u}) {
      for (const uint32_t id : {0u, 77u, 0xffffffffu}) {
        uint32_t w[4][dopamine_fast::cpu::kPhiloxRun];
        dopamine_fast::cpu::philox_blocks_with(isa, key, id, block0, w[0], w[1], w[2], w[3]);
        for (int i = 0; i < dopamine_fast::cpu::kPhiloxRun; ++i) {
          const Philox4 want = dopamine_fast::noise_block_bits(key, id, block0 + static_cast<uint32_t>(i));
          for (int j = 0; j < 4; ++j) {
            DF_CHECK(w[j][i] == want.x[j]) << dopamine_fast::cpu::philox_isa_name(isa) << ": word " << j
                                           << " of block " << block0 + static_cast<uint32_t>(i) << ", id " << id;
          }
        }
      }
    }
  }
  DF_CHECK(checked >= 1) << "the portable path always runs";
}
