// Blocks of members for the CPU kernels' GEMMs over several members' rows, on a grid fixed in member ids.
//
// A GEMM's rounding may depend on its row count (MKL takes other paths for few rows), so a member must meet the
// same GEMM whichever range of members a call evaluates: the grid puts member m in the same block in every call,
// and a call that holds only part of a block pads it to the block's full size (zero rows, computed and dropped).
// Block 0 is [0, offset + per_block) and block j >= 1 is [offset + j per_block, offset + (j + 1) per_block), with
// offset 1 when member 0 is the baseline: K perturbed members, K a multiple of per_block, fill the blocks exactly,
// so a whole call pads nothing; ranges pad at most their first and last block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dopamine_fast {
namespace cpu {

// Members per block: the largest power of two whose rows fit in `block_rows` (at least 1). A power of two, so
// ranges that start and end on multiples of 256 (plus the baseline) pad nothing whatever the batch size.
inline int64_t members_per_block(int64_t rows, int64_t block_rows) {
  int64_t n = 1;
  while (2 * n * std::max<int64_t>(1, rows) <= block_rows) n *= 2;
  return n;
}

struct MemberBlock {
  int64_t first;  // the block's first member in the call (from the call's first member)
  int64_t count;  // its members in the call
  int64_t size;   // members of the whole block (count, or more when the call holds part of it)
  int64_t pad;    // members of the block before `first` that the call does not hold
};

inline std::vector<MemberBlock> member_blocks(int64_t first_member, int64_t num_members, int64_t per_block,
                                              bool baseline) {
  const int64_t offset = baseline ? 1 : 0;
  auto start = [&](int64_t j) { return j == 0 ? 0 : offset + j * per_block; };
  auto block_of = [&](int64_t m) { return m < offset + per_block ? 0 : (m - offset) / per_block; };
  std::vector<MemberBlock> blocks;
  const int64_t end = first_member + num_members;
  for (int64_t j = block_of(first_member); num_members > 0 && start(j) < end; ++j) {
    const int64_t b0 = std::max(start(j), first_member), b1 = std::min(start(j + 1), end);
    const bool whole = b0 == start(j) && b1 == start(j + 1);
    blocks.push_back(MemberBlock{b0 - first_member, b1 - b0, whole ? b1 - b0 : start(j + 1) - start(j),
                                 b0 - start(j)});
  }
  return blocks;
}

}  // namespace cpu
}  // namespace dopamine_fast
