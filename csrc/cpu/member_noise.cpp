// Members' bias vectors and low-rank factors (see member_noise.h), generated in parallel over members.
#include "member_noise.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "normals.h"
#include "parallel.h"

namespace dopamine_fast {
namespace cpu {

at::Tensor member_vectors(const at::Tensor& b, const NoiseKey& key, const Members& members) {
  const int64_t n = b.numel();
  at::Tensor out = at::empty({members.count, n}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "member_vectors", [&] {
    const scalar_t* src = b.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    parallel_for(0, members.count, 16, [&](int64_t m0, int64_t m1) {
      std::vector<float> e(n);
      int64_t drawn = -1;  // the id whose noise e holds: an antithetic pair draws it once
      for (int64_t m = m0; m < m1; ++m) {
        const MemberNoise mn = member_noise(members.first + m, members.baseline, members.antithetic);
        scalar_t* row = dst + m * n;
        if (mn.sign == 0.0f) {
          std::copy(src, src + n, row);
          continue;
        }
        if (mn.id != drawn) noise_normals(key, mn.id, 0, n, e.data());
        drawn = mn.id;
        const scalar_t s = static_cast<scalar_t>(members.sigma) * static_cast<scalar_t>(mn.sign);
        for (int64_t i = 0; i < n; ++i) row[i] = src[i] + s * static_cast<scalar_t>(e[i]);
      }
    });
  });
  return out;
}

std::pair<at::Tensor, at::Tensor> member_factors(int64_t out, int64_t in, int64_t rank, const NoiseKey& key,
                                                 const Members& members, const at::TensorOptions& options) {
  at::Tensor fa = at::empty({members.count, rank, out}, options);
  at::Tensor fb = at::empty({members.count, rank, in}, options);
  AT_DISPATCH_FLOATING_TYPES(fa.scalar_type(), "member_factors", [&] {
    scalar_t* pa = fa.data_ptr<scalar_t>();
    scalar_t* pb = fb.data_ptr<scalar_t>();
    const scalar_t sqrt_r = std::sqrt(static_cast<scalar_t>(rank));
    parallel_for(0, members.count, 4, [&](int64_t m0, int64_t m1) {
      std::vector<float> v((out + in) * rank);
      int64_t drawn = -1;  // the id whose noise v holds: an antithetic pair draws it once
      for (int64_t m = m0; m < m1; ++m) {
        const MemberNoise mn = member_noise(members.first + m, members.baseline, members.antithetic);
        scalar_t* a = pa + m * out * rank;
        scalar_t* b = pb + m * in * rank;
        if (mn.sign == 0.0f) {
          std::fill(a, a + out * rank, scalar_t(0));
          std::fill(b, b + in * rank, scalar_t(0));
          continue;
        }
        if (mn.id != drawn) noise_normals(key, mn.id, 0, (out + in) * rank, v.data());
        drawn = mn.id;
        const scalar_t s = static_cast<scalar_t>(members.sigma) * static_cast<scalar_t>(mn.sign);
        // The stream holds A [out, r] then B [in, r], row-major (docs/noise.md). Restrict pointers and contiguous
        // writes let these loops vectorise (scalar, they cost as much as generating the noise).
        const float* __restrict va = v.data();
        const float* __restrict vb = v.data() + out * rank;
        for (int64_t j = 0; j < rank; ++j) {
          scalar_t* __restrict aj = a + j * out;
          scalar_t* __restrict bj = b + j * in;
          for (int64_t o = 0; o < out; ++o) aj[o] = s * static_cast<scalar_t>(va[o * rank + j]);
          for (int64_t i = 0; i < in; ++i) bj[i] = static_cast<scalar_t>(vb[i * rank + j]) / sqrt_r;
        }
      }
    });
  });
  return {fa, fb};
}

}  // namespace cpu
}  // namespace dopamine_fast
