// Members grouped by the noise they share, so each noise draw is generated once per call on the CPU.
#pragma once

#include <cstdint>
#include <vector>

#include "../ops.h"

namespace dopamine_fast {
namespace cpu {

// Members [first, first + count) all use noise id `id` (an antithetic pair is two consecutive members);
// `perturbed` is false for the unperturbed baseline member. `first` counts from the call's first member.
struct MemberGroup {
  int64_t first;
  int64_t count;
  uint32_t id;
  bool perturbed;
};

// The groups of members first_member .. first_member + num_members - 1 (a range may split an antithetic pair).
inline std::vector<MemberGroup> member_groups(int64_t first_member, int64_t num_members, bool baseline,
                                             bool antithetic) {
  std::vector<MemberGroup> groups;
  for (int64_t m = 0; m < num_members;) {
    const MemberNoise mn = member_noise(first_member + m, baseline, antithetic);
    int64_t count = 1;
    if (mn.sign != 0.0f && m + 1 < num_members &&
        member_noise(first_member + m + 1, baseline, antithetic).id == mn.id)
      count = 2;
    groups.push_back(MemberGroup{m, count, mn.id, mn.sign != 0.0f});
    m += count;
  }
  return groups;
}

}  // namespace cpu
}  // namespace dopamine_fast
