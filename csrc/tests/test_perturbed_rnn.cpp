// The CPU kernel of perturbed_rnn against a scalar reference: every member k runs
// h_t = act(x_t W_ih,k^T + b_ih,k + h_{t-1} W_hh,k^T + b_hh,k), each weight and bias w + s_k sigma eps_k with its
// own stream, on odd shapes, full and low rank, the last state or the whole sequence.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "dispatch.h"
#include "harness.h"
#include "reference.h"

namespace {

struct Case {
  int64_t members, batch, steps, in, hidden, rank;
  bool baseline, antithetic, biases, h0, return_sequence;
  const char* nonlinearity;
  at::ScalarType dtype;
  int64_t first_member;  // members first_member .. first_member + members - 1 (0 when left out)
};

void check_case(const Case& k) {
  const int64_t seed = 77, step = 5;
  const std::vector<int64_t> streams = {4, 5, 6, 7};  // weight_ih, weight_hh, bias_ih, bias_hh
  const df_test::Counter c_ih{seed, step, 4}, c_hh{seed, step, 5}, c_bih{seed, step, 6}, c_bhh{seed, step, 7};
  const double sigma = 0.3;
  const auto opts = at::TensorOptions().dtype(k.dtype);
  at::manual_seed(k.hidden * 10 + k.steps);
  const at::Tensor x = at::randn({k.batch, k.steps, k.in}, opts);
  const at::Tensor w_ih = at::randn({k.hidden, k.in}, opts) * 0.5;
  const at::Tensor w_hh = at::randn({k.hidden, k.hidden}, opts) * 0.5;
  const auto maybe = [&](bool on, at::IntArrayRef shape) {
    return on ? std::optional<at::Tensor>(at::randn(shape, opts)) : std::nullopt;
  };
  const auto h0 = maybe(k.h0, {k.members, k.batch, k.hidden});
  const auto b_ih = maybe(k.biases, {k.hidden}), b_hh = maybe(k.biases, {k.hidden});
  const at::Tensor y = df_test::op<dopamine_fast::PerturbedRnnKernel>("perturbed_rnn")
                           .call(x, h0, w_ih, w_hh, b_ih, b_hh, seed, step, streams, sigma, k.members, k.rank,
                                 k.baseline, k.antithetic, k.nonlinearity, k.return_sequence, k.first_member);
  const int64_t H = k.hidden;
  const auto xs = df_test::values(x), wih = df_test::values(w_ih), whh = df_test::values(w_hh);
  const auto h0s = k.h0 ? df_test::values(*h0) : std::vector<double>(k.members * k.batch * H, 0.0);
  const std::vector<double> zeros(H, 0.0);
  const auto bih = k.biases ? df_test::values(*b_ih) : zeros, bhh = k.biases ? df_test::values(*b_hh) : zeros;
  const auto got = df_test::values(y);
  DF_CHECK(static_cast<int64_t>(got.size()) == k.members * k.batch * (k.return_sequence ? k.steps : 1) * H)
      << "shape " << y.sizes();
  for (int64_t m = 0; m < k.members; ++m) {
    const auto member = [&](const std::vector<double>& w, const df_test::Counter& c, int64_t out, int64_t in,
                            int64_t rank) {
      return df_test::member_param(w, c, k.first_member + m, k.baseline, k.antithetic, sigma, out, in, rank);
    };
    const auto wi = member(wih, c_ih, H, k.in, k.rank), wh = member(whh, c_hh, H, H, k.rank);
    const auto bi = k.biases ? member(bih, c_bih, H, 0, 0) : zeros, bh = k.biases ? member(bhh, c_bhh, H, 0, 0) : zeros;
    for (int64_t r = 0; r < k.batch; ++r) {
      std::vector<double> h(h0s.begin() + (m * k.batch + r) * H, h0s.begin() + (m * k.batch + r + 1) * H), next(H);
      for (int64_t t = 0; t < k.steps; ++t) {
        const double* xt = xs.data() + (r * k.steps + t) * k.in;
        for (int64_t o = 0; o < H; ++o) {
          double v = bi[o] + bh[o];
          for (int64_t i = 0; i < k.in; ++i) v += xt[i] * wi[o * k.in + i];
          for (int64_t i = 0; i < H; ++i) v += h[i] * wh[o * H + i];
          next[o] = df_test::activate(v, k.nonlinearity);
        }
        h = next;
        if (!k.return_sequence && t + 1 < k.steps) continue;
        const int64_t at_step = k.return_sequence ? ((m * k.batch + r) * k.steps + t) : (m * k.batch + r);
        for (int64_t o = 0; o < H; ++o) {
          DF_CHECK_CLOSE(got[at_step * H + o], h[o], 1e-4, 1e-4)
              << "member " << m << " row " << r << " step " << t << " unit " << o << " (rank " << k.rank << ", "
              << k.nonlinearity << ", dtype " << k.dtype << ")";
        }
      }
    }
  }
}

}  // namespace

DF_TEST(perturbed_rnn, full_rank) {
  check_case({5, 3, 4, 3, 7, 0, true, true, true, true, true, "tanh", at::kFloat});
  check_case({2, 1, 6, 5, 3, 0, false, false, false, false, false, "relu", at::kDouble});
}

DF_TEST(perturbed_rnn, low_rank) {
  check_case({5, 2, 3, 6, 5, 2, true, true, true, false, false, "tanh", at::kFloat});
  check_case({4, 3, 5, 2, 9, 1, false, true, false, true, true, "relu", at::kDouble});
}

DF_TEST(perturbed_rnn, member_range) {  // a range starting inside an antithetic pair, full and low rank
  check_case({3, 2, 4, 3, 5, 0, true, true, true, true, false, "tanh", at::kFloat, 2});
  check_case({4, 2, 3, 4, 6, 2, true, true, true, false, true, "tanh", at::kDouble, 3});
}
