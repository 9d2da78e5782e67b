// The CPU kernel of perturbed_linear against a scalar reference: every member k computes
// act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k), on odd shapes, full and low rank, with and without bias.
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "dispatch.h"
#include "harness.h"
#include "reference.h"

namespace {

struct Case {
  int64_t members, batch, in, out, rank;
  bool baseline, antithetic, bias, per_member_x;
  const char* activation;
  at::ScalarType dtype;
  int64_t first_member;  // members first_member .. first_member + members - 1 (0 when left out)
};

void check_case(const Case& k) {
  const df_test::Counter wc{2024, 3, 0}, bc{2024, 3, 1};
  const double sigma = 0.5;
  const auto opts = at::TensorOptions().dtype(k.dtype);
  at::manual_seed(k.members * 100 + k.in);
  const at::Tensor x = k.per_member_x ? at::randn({k.members, k.batch, k.in}, opts) : at::randn({k.batch, k.in}, opts);
  const at::Tensor w = at::randn({k.out, k.in}, opts);
  const std::optional<at::Tensor> b = k.bias ? std::optional<at::Tensor>(at::randn({k.out}, opts)) : std::nullopt;
  const at::Tensor y = df_test::op<dopamine_fast::PerturbedLinearKernel>("perturbed_linear")
                           .call(x, w, b, wc.seed, wc.step, wc.stream, bc.stream, sigma, k.members, k.rank,
                                 k.baseline, k.antithetic, k.activation, k.first_member);
  DF_CHECK(y.sizes() == at::IntArrayRef({k.members, k.batch, k.out})) << "shape " << y.sizes();
  DF_CHECK(y.scalar_type() == k.dtype) << "dtype " << y.scalar_type();
  const auto xs = df_test::values(x), ws = df_test::values(w), got = df_test::values(y);
  const auto bs = k.bias ? df_test::values(*b) : std::vector<double>(k.out, 0.0);
  for (int64_t m = 0; m < k.members; ++m) {
    const int64_t g = k.first_member + m;  // the member's number in the whole evaluation
    const auto wm = df_test::member_param(ws, wc, g, k.baseline, k.antithetic, sigma, k.out, k.in, k.rank);
    const auto bm = k.bias ? df_test::member_param(bs, bc, g, k.baseline, k.antithetic, sigma, k.out, 0, 0) : bs;
    const double* xm = xs.data() + (k.per_member_x ? m * k.batch * k.in : 0);
    for (int64_t r = 0; r < k.batch; ++r) {
      for (int64_t o = 0; o < k.out; ++o) {
        double v = bm[o];
        for (int64_t i = 0; i < k.in; ++i) v += xm[r * k.in + i] * wm[o * k.in + i];
        const double want = df_test::activate(v, k.activation);
        DF_CHECK_CLOSE(got[(m * k.batch + r) * k.out + o], want, 1e-4, 1e-4)
            << "member " << m << " row " << r << " output " << o << " (rank " << k.rank << ", " << k.activation
            << ", dtype " << k.dtype << ")";
      }
    }
  }
}

}  // namespace

DF_TEST(perturbed_linear, full_rank) {
  check_case({5, 3, 13, 7, 0, true, true, true, false, "tanh", at::kFloat});
  check_case({4, 1, 9, 11, 0, false, false, false, true, "none", at::kDouble});
  check_case({3, 2, 5, 6, 0, true, false, true, false, "sigmoid", at::kFloat});
}

DF_TEST(perturbed_linear, low_rank) {
  check_case({5, 3, 13, 7, 2, true, true, true, false, "relu", at::kFloat});
  check_case({6, 2, 17, 3, 1, false, true, true, true, "none", at::kDouble});
  check_case({3, 5, 4, 9, 3, true, false, false, false, "tanh", at::kFloat});
}

DF_TEST(perturbed_linear, member_range) {  // a range starting inside an antithetic pair, full and low rank
  check_case({4, 3, 13, 7, 0, true, true, true, false, "tanh", at::kFloat, 2});
  check_case({5, 2, 9, 6, 2, true, true, true, false, "none", at::kDouble, 5});
}
