// CPU kernel of perturbed_linear: y_k = act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k) for the members
// k = first_member .. first_member + K - 1; each member's outputs are the same bits in any range that holds it.
//
// Full rank: y_k = x_k W^T + b_k + s_k sigma x_k E^T, the reference's order. Each noise id's E is generated once
// per call and serves both members of an antithetic pair; W + s sigma E is never formed (that pass cost a fifth
// of a batch-1 call). With a shared x, x W^T is one GEMM for all members and x E^T one per id; otherwise x_k W^T
// is taken by GEMMs over blocks of members, as the low-rank path does (below). At batch 4 or less E is generated a
// stretch at a time and dotted with x while in L1; above, into a per-thread buffer for a GEMM. Memory is one
// weight per thread at most, never K x P.
//
// Low rank: blocks of members add each row's s sigma ((x B_k) A_k^T) / sqrt(r) from the members' small generated
// factors (low_rank_rows.h), then one GEMM per block adds x W^T (blocks on the member grid of member_blocks.h).
// The factors and perturbed biases are generated inside each block, a few members at a time, so that beside the
// output the call holds O(threads x r (out + in)), not O(K r (out + in)): at batch 1 the factors of all K members
// would outweigh the output itself.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "activation.h"
#include "low_rank_rows.h"
#include "member_blocks.h"
#include "member_groups.h"
#include "member_noise.h"
#include "normals.h"
#include "parallel.h"
#include "rows_dot.h"

namespace dopamine_fast {
namespace {

constexpr int64_t kBlockRows = 256;  // rows (members x batch) of one block's GEMM: they stay in cache
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

bool cache_line_aligned(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 64 == 0; }

// y_block += x_block W^T over a block's rows, through zero-padded copies when the call holds part of the block,
// so the GEMM has the block's full row count (member_blocks.h). A whole block is multiplied in place only where
// its rows start on a cache line: MKL's results depend on its operands' alignment (seen on an AMD EPYC), and the
// copies are as aligned as any fresh tensor, so either way every row gets the same bits.
void add_block_gemm(at::Tensor y, const at::Tensor& x, const at::Tensor& weight, const cpu::MemberBlock& blk) {
  const int64_t rows = y.size(1), out = y.size(2), in = x.size(2);
  if (blk.size == blk.count && cache_line_aligned(x) && cache_line_aligned(y)) {
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

// x E^T at this batch or below is taken while each generated stretch of kDotRun elements of E is in L1
// (rows_dot.h); above it, all of E is generated and multiplied by one GEMM, which reuses it across the rows.
constexpr int64_t kDotRows = 4;
constexpr int64_t kDotRun = 4096;

// z = x E^T for the inputs of one group (x: `nx` contiguous rows of `in`; z: nx rows of `out`), float32 only.
void noise_dot(const NoiseKey& key, uint32_t id, int64_t out, int64_t in, const float* x, int64_t nx, float* z,
               std::vector<float>& run) {
  const int64_t stretch = std::max<int64_t>(1, kDotRun / std::max<int64_t>(in, 1));
  run.resize(stretch * in);
  for (int64_t o0 = 0; o0 < out; o0 += stretch) {
    const int64_t n = std::min(stretch, out - o0);
    cpu::noise_normals(key, id, o0 * in, n * in, run.data());
    cpu::rows_dot(run.data(), n, in, x, nx, in, z + o0, out);
  }
}

template <typename T>
void linear_full_rank(const LinearArgs& a, const std::optional<at::Tensor>& biases, at::Tensor& y) {
  const int64_t out = a.weight.size(0), in = a.weight.size(1), numel = out * in, rows = a.x.size(-2);
  const bool shared = a.x.dim() == 2;
  const bool by_rows = std::is_same<T, float>::value && rows <= kDotRows;
  const at::Tensor wt = a.weight.t();
  // A shared x needs x W^T once for every member, and x E^T once per noise id.
  const at::Tensor base = shared ? at::mm(a.x, wt) : at::Tensor();
  if (!shared) {
    // x_k W^T of every member by GEMMs over blocks of members (one GEMV per member re-read W from L2 each time
    // and took a quarter of a batch-1 call); blocks on the fixed grid keep each member's bits in any range.
    y.zero_();
    const auto blocks =
        cpu::member_blocks(a.first_member, a.num_members, cpu::members_per_block(rows, kBlockRows), a.baseline);
    cpu::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t k0 = blocks[b].first, nk = blocks[b].count;
        add_block_gemm(y.narrow(0, k0, nk), a.x.narrow(0, k0, nk), a.weight, blocks[b]);
      }
    });
  }
  const auto groups = cpu::member_groups(a.first_member, a.num_members, a.baseline, a.antithetic);
  cpu::parallel_for(0, static_cast<int64_t>(groups.size()), 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> run;
    at::Tensor e32, e, z;
    if (!by_rows) {
      e32 = at::empty({out, in}, a.weight.options().dtype(at::kFloat));
      e = std::is_same<T, float>::value ? e32 : at::empty({out, in}, a.weight.options());
    }
    // x E^T of each input of the group: one for a shared x, one per member otherwise (by_rows), else shared only.
    if (by_rows || shared) z = at::empty({shared ? 1 : 2, rows, out}, a.weight.options());
    for (int64_t g = g0; g < g1; ++g) {
      const cpu::MemberGroup& grp = groups[g];
      const int64_t inputs = shared ? 1 : grp.count;
      if (grp.perturbed && by_rows) {
        const at::Tensor xg = shared ? a.x : a.x.narrow(0, grp.first, grp.count);
        noise_dot(a.weight_key, grp.id, out, in, xg.data_ptr<float>(), inputs * rows, z.data_ptr<float>(), run);
      } else if (grp.perturbed) {
        cpu::noise_normals(a.weight_key, grp.id, 0, numel, e32.data_ptr<float>());
        if (!std::is_same<T, float>::value) e.copy_(e32);
        if (shared) {
          at::Tensor z0 = z[0];
          at::mm_out(z0, a.x, e.t());
        }
      }
      for (int64_t m = grp.first; m < grp.first + grp.count; ++m) {
        const T s = static_cast<T>(a.sigma * member_noise(a.first_member + m, a.baseline, a.antithetic).sign);
        // y_m = x W^T + b_m + s sigma x E^T in a plain loop: at batch 1 the ATen calls per member (views, adds)
        // cost as much as the arithmetic.
        T* ym = y.data_ptr<T>() + m * rows * out;
        const T* xw = shared ? base.data_ptr<T>() : ym;
        const T* bm = biases ? biases->data_ptr<T>() + m * out : nullptr;
        const bool add_z = grp.perturbed && (by_rows || shared);
        const T* zm = add_z ? z.data_ptr<T>() + (shared ? 0 : m - grp.first) * rows * out : nullptr;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t o = 0; o < out; ++o) {
            T v = xw[r * out + o];
            if (bm) v += bm[o];
            if (zm) v += s * zm[r * out + o];
            ym[r * out + o] = v;
          }
        }
        if (grp.perturbed && !add_z) {
          at::Tensor yt = y[m];
          yt.addmm_(a.x[m], e.t(), 1.0, s);
        }
      }
    }
  });
  cpu::apply_activation_(y, a.act);
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
    y = at::empty({num_members, x.size(-2), weight.size(0)}, a.weight.options());  // contiguous: indexed directly
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
