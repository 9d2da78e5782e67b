// CPU kernel of perturbed_linear: y_k = act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k) for the members
// k = first_member .. first_member + K - 1; each member's outputs are the same bits in any range that holds it.
//
// Full rank: each noise id's E is generated once into a per-thread buffer, W + s sigma E is formed there and one
// GEMM serves all B rows of the member (both members of an antithetic pair reuse the draw). Memory is one
// weight per thread, never K x P. Low rank: blocks of members add each row's s sigma ((x B_k) A_k^T) / sqrt(r)
// from the members' small generated factors (low_rank_rows.h), then one GEMM per block adds x W^T (blocks on the
// member grid of member_blocks.h). The factors and perturbed biases are generated inside each block, a few
// members at a time, so that beside the output the call holds O(threads x r (out + in)), not O(K r (out + in)):
// at batch 1 the factors of all K members would outweigh the output itself.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../ops.h"
#include "activation.h"
#include "low_rank_rows.h"
#include "member_blocks.h"
#include "member_groups.h"
#include "member_noise.h"
#include "normals.h"
#include "parallel.h"

namespace dopamine_fast {
namespace {

constexpr int64_t kBlockRows = 256;  // rows (members x batch) of one low-rank task: they stay in cache
constexpr int64_t kFactorMembers = 32;  // members whose factors are generated at once inside a low-rank block

struct LinearArgs {
  at::Tensor x;                  // [B, in] (shared) or [K, B, in], contiguous, the weight's dtype
  at::Tensor weight;             // [out, in], contiguous
  std::optional<at::Tensor> bias;  // [out], contiguous
  NoiseKey weight_key, bias_key;
  double sigma;
  int64_t first_member, num_members, rank;
  bool baseline, antithetic;
  Activation act;
};

template <typename T>
void linear_full_rank(const LinearArgs& a, const std::optional<at::Tensor>& biases, at::Tensor& y) {
  const int64_t out = a.weight.size(0), in = a.weight.size(1), numel = out * in;
  const bool shared = a.x.dim() == 2;
  const T* w = a.weight.data_ptr<T>();
  const auto groups = cpu::member_groups(a.first_member, a.num_members, a.baseline, a.antithetic);
  cpu::parallel_for(0, static_cast<int64_t>(groups.size()), 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> e(numel);
    at::Tensor wm = at::empty({out, in}, a.weight.options());
    T* wmp = wm.data_ptr<T>();
    for (int64_t g = g0; g < g1; ++g) {
      const cpu::MemberGroup& grp = groups[g];
      if (grp.perturbed) cpu::noise_normals(a.weight_key, grp.id, 0, numel, e.data());
      for (int64_t m = grp.first; m < grp.first + grp.count; ++m) {
        if (grp.perturbed) {
          const T s = static_cast<T>(a.sigma) *
                      static_cast<T>(member_noise(a.first_member + m, a.baseline, a.antithetic).sign);
          for (int64_t i = 0; i < numel; ++i) wmp[i] = w[i] + s * static_cast<T>(e[i]);
        }
        const at::Tensor& wk = grp.perturbed ? wm : a.weight;
        at::Tensor ym = y[m];
        const at::Tensor xm = shared ? a.x : a.x[m];
        if (biases) {
          at::addmm_out(ym, (*biases)[m], xm, wk.t());
        } else {
          at::mm_out(ym, xm, wk.t());
        }
        cpu::apply_activation_(ym, a.act);
      }
    }
  });
}

// y_block += x_block W^T over a block's rows, through zero-padded copies when the call holds part of the block,
// so the GEMM has the block's full row count (member_blocks.h).
void add_block_gemm(at::Tensor y, const at::Tensor& x, const at::Tensor& weight, const cpu::MemberBlock& blk) {
  const int64_t rows = y.size(1), out = y.size(2), in = x.size(2);
  if (blk.size == blk.count) {
    y.view({-1, out}).addmm_(x.reshape({-1, in}), weight.t());
    return;
  }
  at::Tensor xp = at::zeros({blk.size, rows, in}, x.options());
  at::Tensor yp = at::zeros({blk.size, rows, out}, y.options());
  xp.narrow(0, blk.pad, blk.count).copy_(x);
  yp.narrow(0, blk.pad, blk.count).copy_(y);
  yp.view({-1, out}).addmm_(xp.view({-1, in}), weight.t());
  y.copy_(yp.narrow(0, blk.pad, blk.count));
}

template <typename T>
at::Tensor linear_low_rank(const LinearArgs& a) {
  const int64_t out = a.weight.size(0), in = a.weight.size(1), k = a.num_members, rows = a.x.size(-2);
  const bool shared = a.x.dim() == 2;
  at::Tensor y = at::empty({k, rows, out}, a.weight.options());
  // A shared x needs x W^T once, added row by row; otherwise each block's GEMM adds it while the block's
  // rows are still in cache.
  const at::Tensor base = shared ? at::mm(a.x, a.weight.t()) : at::Tensor();
  const int64_t r = a.rank, x_member = shared ? 0 : rows * in;
  const auto blocks = cpu::member_blocks(a.first_member, k, cpu::members_per_block(rows, kBlockRows), a.baseline);
  cpu::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t blk0, int64_t blk1) {
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t k0 = blocks[blk].first, nk = blocks[blk].count;
      // Each row's result depends on its own member's factors only, so the chunking leaves every bit alone. Chunks
      // end on a grid of perturbed members, so that no antithetic pair is split and each draws its noise once.
      const int64_t offset = a.baseline ? 1 : 0;
      for (int64_t c0 = k0, c1; c0 < k0 + nk; c0 = c1) {
        const int64_t g = a.first_member + c0;
        // (-1 / kFactorMembers is 0: the baseline member joins the first chunk.)
        const int64_t grid_end = offset + ((g - offset) / kFactorMembers + 1) * kFactorMembers;
        c1 = std::min(k0 + nk, grid_end - a.first_member);
        const cpu::Members mem{g, c1 - c0, a.baseline, a.antithetic, a.sigma};
        const auto factors = cpu::member_factors(out, in, r, a.weight_key, mem, a.weight.options());
        const at::Tensor biases = a.bias ? cpu::member_vectors(*a.bias, a.bias_key, mem) : at::Tensor();
        cpu::low_rank_rows<T>(y.data_ptr<T>() + c0 * rows * out, mem.count, rows, out, r,
                              shared ? base.data_ptr<T>() : nullptr,
                              biases.defined() ? biases.data_ptr<T>() : nullptr,
                              {cpu::LowRankTerm<T>{a.x.data_ptr<T>() + c0 * x_member, x_member, in, in,
                                                   factors.first.data_ptr<T>(), factors.second.data_ptr<T>()}});
      }
      at::Tensor yb = y.narrow(0, k0, nk);
      if (!shared) add_block_gemm(yb, a.x.narrow(0, k0, nk), a.weight, blocks[blk]);
      cpu::apply_activation_(yb, a.act);
    }
  });
  return y;
}

at::Tensor perturbed_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                int64_t seed, int64_t step, int64_t weight_stream, int64_t bias_stream, double sigma,
                                int64_t num_members, int64_t rank, bool baseline, bool antithetic,
                                c10::string_view activation, int64_t first_member) {
  const Activation act = parse_activation(std::string(activation), /*allowed_rnn=*/false);
  // Half and bfloat16 layers are computed in float32 and rounded once at the end. Inputs are detached: the op is
  // not differentiable, so nothing in it may carry autograd history (parallel.h).
  const at::ScalarType dtype = weight.scalar_type();
  const at::ScalarType compute = (dtype == at::kDouble) ? at::kDouble : at::kFloat;
  LinearArgs a{x.detach().to(compute).contiguous(),
               weight.detach().to(compute).contiguous(),
               bias ? std::optional<at::Tensor>(bias->detach().to(compute).contiguous()) : std::nullopt,
               make_noise_key(seed, step, weight_stream),
               make_noise_key(seed, step, bias_stream),
               sigma,
               first_member,
               num_members,
               rank,
               baseline,
               antithetic,
               act};
  at::Tensor y;
  AT_DISPATCH_FLOATING_TYPES(compute, "perturbed_linear", [&] {
    if (rank > 0) {
      y = linear_low_rank<scalar_t>(a);
      return;
    }
    const std::optional<at::Tensor> biases =
        a.bias ? std::optional<at::Tensor>(cpu::member_vectors(
                     *a.bias, a.bias_key, cpu::Members{first_member, num_members, baseline, antithetic, sigma}))
               : std::nullopt;
    y = at::empty({num_members, x.size(-2), weight.size(0)}, a.weight.options());
    if (y.numel() > 0) linear_full_rank<scalar_t>(a, biases, y);
  });
  return y.to(dtype);
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU, m) {
  m.impl("perturbed_linear",
         static_cast<dopamine_fast::PerturbedLinearKernel*>(&dopamine_fast::perturbed_linear_cpu));
}
