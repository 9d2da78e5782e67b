// Scalar references of the noise and of the CPU kernels, written from docs/noise.md one element at a time in
// double precision, for the C++ tests. Slow and obvious on purpose.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../ops.h"
#include "../philox.h"

namespace df_test {

struct Counter {
  int64_t seed, step, stream;
};

// Element e of noise id `id`: lane e & 3 of block e >> 2, through the scalar generator of philox.h.
inline double normal(const Counter& c, uint32_t id, int64_t e) {
  const auto key = dopamine_fast::make_noise_key(c.seed, c.step, c.stream);
  return dopamine_fast::noise_block(key, id, static_cast<uint32_t>(e >> 2)).z[e & 3];
}

inline uint32_t word(const Counter& c, uint32_t id, int64_t e) {
  const auto key = dopamine_fast::make_noise_key(c.seed, c.step, c.stream);
  return dopamine_fast::noise_block_bits(key, id, static_cast<uint32_t>(e >> 2)).x[e & 3];
}

// eps_id of an [out, in] parameter (in = 0: a vector of `out` elements), row-major: full rank, or
// A B^T / sqrt(r) with A = v[:out r].view(out, r), B = v[out r:].view(in, r) for rank r >= 1.
inline std::vector<double> eps(const Counter& c, uint32_t id, int64_t out, int64_t in, int64_t rank) {
  const int64_t n = in == 0 ? out : out * in;
  std::vector<double> e(n);
  if (rank == 0 || in == 0) {
    for (int64_t i = 0; i < n; ++i) e[i] = normal(c, id, i);
    return e;
  }
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (int64_t q = 0; q < rank; ++q) s += normal(c, id, o * rank + q) * normal(c, id, out * rank + i * rank + q);
      e[o * in + i] = s / std::sqrt(static_cast<double>(rank));
    }
  }
  return e;
}

// w + sign_k sigma eps_id(k) of member k (docs/noise.md, "Members").
inline std::vector<double> member_param(const std::vector<double>& w, const Counter& c, int64_t k, bool baseline,
                                        bool antithetic, double sigma, int64_t out, int64_t in, int64_t rank) {
  const auto m = dopamine_fast::member_noise(k, baseline, antithetic);
  std::vector<double> p = w;
  if (m.sign == 0.0f) return p;
  const auto e = eps(c, m.id, out, in, rank);
  for (size_t i = 0; i < p.size(); ++i) p[i] += m.sign * sigma * e[i];
  return p;
}

inline double activate(double v, const std::string& activation) {
  if (activation == "tanh") return std::tanh(v);
  if (activation == "relu") return v > 0 ? v : 0;
  if (activation == "sigmoid") return 1 / (1 + std::exp(-v));
  return v;
}

// The values of a tensor as doubles, row-major.
inline std::vector<double> values(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace df_test
