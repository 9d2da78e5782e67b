// The CPU kernel of rpe_update_ against a scalar reference: param += alpha * sum_j coeffs[j] * eps_j, full and low
// rank, a vector, and a strided view (nothing around it is written).
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "dispatch.h"
#include "harness.h"
#include "reference.h"

namespace {

void check_update(const at::Tensor& param, int64_t rank, int64_t n_ids, at::ScalarType dtype) {
  const df_test::Counter c{31337, 8, 2};
  const double alpha = 0.25;
  at::manual_seed(n_ids);
  const at::Tensor coeffs = at::randn({n_ids}, at::TensorOptions().dtype(dtype));
  const auto before = df_test::values(param), cs = df_test::values(coeffs);
  df_test::op<dopamine_fast::RpeUpdateKernel>("rpe_update_").call(param, coeffs, c.seed, c.step, c.stream, rank, alpha);
  const int64_t out = param.size(0), in = param.dim() >= 2 ? param.numel() / out : 0;
  std::vector<double> want = before;
  for (int64_t j = 0; j < n_ids; ++j) {
    const auto e = df_test::eps(c, static_cast<uint32_t>(j), out, in, param.dim() >= 2 ? rank : 0);
    for (size_t i = 0; i < want.size(); ++i) want[i] += alpha * cs[j] * e[i];
  }
  const auto got = df_test::values(param);
  for (size_t i = 0; i < want.size(); ++i) {
    DF_CHECK_CLOSE(got[i], want[i], 1e-4, 1e-4) << "element " << i << " (rank " << rank << ", " << n_ids
                                                << " ids, shape " << param.sizes() << ", dtype " << dtype << ")";
  }
}

}  // namespace

DF_TEST(rpe_update, full_rank) {
  check_update(at::randn({7, 13}), 0, 5, at::kFloat);
  check_update(at::randn({3, 2, 5}, at::TensorOptions().dtype(at::kDouble)), 0, 3, at::kDouble);
  check_update(at::randn({11}), 2, 4, at::kFloat);  // a vector takes full-rank noise whatever the rank
}

DF_TEST(rpe_update, low_rank) {
  check_update(at::randn({7, 13}), 2, 5, at::kFloat);
  check_update(at::randn({9, 4}, at::TensorOptions().dtype(at::kDouble)), 3, 6, at::kDouble);
}

DF_TEST(rpe_update, strided_view) {
  at::Tensor base = at::randn({5, 2 * 9});
  const at::Tensor saved = base.clone();
  at::Tensor view = base.slice(1, 0, c10::nullopt, 2);
  check_update(view, 0, 3, at::kFloat);
  const at::Tensor untouched = base.slice(1, 1, c10::nullopt, 2);
  DF_CHECK(at::equal(untouched, saved.slice(1, 1, c10::nullopt, 2))) << "the kernel wrote outside the view";
}
