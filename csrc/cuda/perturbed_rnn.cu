// CUDA kernels of perturbed_rnn: one perturbed layer of two terms per step (x_t W_ih^T and h_{t-1} W_hh^T), full
// rank by the tiled kernel of perturbed_matmul.cuh, low rank by cuBLAS and the kernels of low_rank.cuh. Noise is
// regenerated from (seed, step, stream, id, element) as docs/noise.md specifies and never stored per member.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>

#include "common.cuh"
#include "low_rank.cuh"
#include "perturbed_matmul.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

at::Tensor perturbed_rnn_cuda(const at::Tensor& x, const std::optional<at::Tensor>& h0, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                              const std::optional<at::Tensor>& bias_hh, int64_t seed, int64_t step,
                              c10::IntArrayRef streams, double sigma, int64_t num_members, int64_t rank, bool baseline,
                              bool antithetic, c10::string_view nonlinearity, bool return_sequence,
                              int64_t first_member) {
  TORCH_CHECK(weight_hh.is_cuda(), "weight_hh must be a CUDA tensor, got ", weight_hh.device());
  const int act = static_cast<int>(parse_activation(std::string(nonlinearity), /*allowed_rnn=*/true));
  const c10::cuda::CUDAGuard guard(weight_hh.device());
  const auto ct = compute_type(weight_hh.scalar_type());
  const auto opts = weight_hh.options().dtype(ct);
  auto conv = [&](const std::optional<at::Tensor>& t) {
    return t.has_value() ? std::optional<at::Tensor>(t->to(ct).contiguous()) : std::nullopt;
  };
  const at::Tensor wih = weight_ih.to(ct).contiguous(), whh = weight_hh.to(ct).contiguous();
  const at::Tensor xc = x.to(ct).contiguous();
  const std::optional<at::Tensor> h0c = conv(h0), bih = conv(bias_ih), bhh = conv(bias_hh);
  const bool shared = x.dim() == 3;
  const int64_t M = num_members, B = x.size(-3), T = x.size(-2), in = wih.size(1), H = whh.size(0);
  const NoiseKey key = make_noise_key(seed, step, streams[0]);
  const bool h0_shared = h0c.has_value() && h0c->dim() == 2;

  at::Tensor out = return_sequence ? at::empty({M, B, T, H}, opts) : at::empty({M, B, H}, opts);
  if (T == 0) {
    if (!return_sequence) {
      if (h0c.has_value()) {
        out.copy_(h0c->expand({M, B, H}));
      } else {
        out.zero_();
      }
    }
    return out.scalar_type() == weight_hh.scalar_type() ? out : out.to(weight_hh.scalar_type());
  }
  // Where step t writes h_t: a slice of the sequence, or one of two buffers (the last step lands in `out`).
  const at::Tensor spare = return_sequence ? at::Tensor() : at::empty({M, B, H}, opts);
  auto target = [&](int64_t t) -> at::Tensor {
    if (return_sequence) return out.select(2, t);
    return (T - 1 - t) % 2 == 0 ? out : spare;
  };

  if (rank == 0) {
    // One launch per step: both products (x_t W_ih^T and h W_hh^T) reduce in the same CTA, the noise of both
    // weights regenerated tile by tile, so nothing of size K x P is ever stored.
    AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_rnn", [&] {
      for (int64_t t = 0; t < T; ++t) {
        MatmulParams<scalar_t> p =
            base_params<scalar_t>(bih, streams[2], bhh, streams[3], key, sigma, first_member, M, baseline, act);
        p.seg[0] = segment<scalar_t>(xc, shared ? 0 : B * T * in, T * in, t * in, wih, streams[0]);
        p.num_seg = 1;
        if (t > 0) {
          const at::Tensor prev = target(t - 1);
          p.seg[1] = segment<scalar_t>(prev, prev.stride(0), prev.stride(1), 0, whh, streams[1]);
          p.num_seg = 2;
        } else if (h0c.has_value()) {
          p.seg[1] = segment<scalar_t>(*h0c, h0_shared ? 0 : B * H, H, 0, whh, streams[1]);
          p.num_seg = 2;
        }
        const at::Tensor dst = target(t);
        p.y = dst.data_ptr<scalar_t>();
        p.y_member = dst.stride(0);
        p.y_row = dst.stride(1);
        p.rows = B;
        p.out = H;
        launch_perturbed_matmul(p, antithetic);
      }
    });
  } else {
    // Low rank: per step h W_hh^T (one GEMM over all members' rows), plus one batched GEMM that applies both
    // corrections at once: [t_ih, t_hh] [A_ih, A_hh]^T with t = s sigma / sqrt(r) (x B).
    const MemberTable table = member_table(first_member, M, baseline, antithetic, opts);
    const int64_t n_ids = table.id_range.count;
    const at::Tensor bm = member_biases(bih, streams[2], bhh, streams[3], key, sigma, M, table);
    at::Tensor fb_ih, fb_hh, a_cat, coef;
    if (n_ids > 0) {
      const auto [a_ih, b_ih] = low_rank_factors(H, in, rank, table.id_range, with_stream(key, streams[0]), opts);
      const auto [a_hh, b_hh] = low_rank_factors(H, H, rank, table.id_range, with_stream(key, streams[1]), opts);
      fb_ih = shared ? b_ih : b_ih.index_select(0, table.ids);
      fb_hh = b_hh.index_select(0, table.ids);
      a_cat = at::cat({a_ih.index_select(0, table.ids), a_hh.index_select(0, table.ids)}, 2).transpose(1, 2);
      coef = (table.signs * (sigma / std::sqrt(static_cast<double>(rank)))).view({M, 1, 1});
    }
    // Input projections: shared rows need no member axis, so all steps at once; per-member rows step by step.
    const at::Tensor xw_all = shared ? at::matmul(xc, wih.t()) : at::Tensor();  // [B, T, H]
    // Without h0 the state before the first step is zero: its products are zero, never materialised.
    at::Tensor h = h0c.has_value() ? h0c->expand({M, B, H}) : at::Tensor();
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor x_t = shared ? xc.select(1, t) : xc.select(2, t);  // [B, in] or [M, B, in]
      at::Tensor pre = h.defined() ? at::matmul(h, whh.t()).contiguous() : at::zeros({M, B, H}, opts);
      if (n_ids > 0) {
        const at::Tensor t_ih = shared ? project_rows(x_t, true, fb_ih, table) : at::bmm(x_t, fb_ih);
        const at::Tensor t_hh = h.defined() ? at::bmm(h, fb_hh) : at::zeros_like(t_ih);
        pre.baddbmm_(at::cat({t_ih, t_hh}, 2) * coef, a_cat);
      }
      const at::Tensor xw = shared ? xw_all.select(1, t) : at::matmul(x_t, wih.t());
      const at::Tensor dst = target(t);
      AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_rnn", [&] {
        EpilogueArgs<scalar_t> a{};
        a.src = pre.data_ptr<scalar_t>();
        a.add = xw.data_ptr<scalar_t>();
        a.add_member = shared ? 0 : xw.stride(0);
        a.add_row = shared ? xw.stride(0) : xw.stride(1);
        a.bias = bm.defined() ? bm.data_ptr<scalar_t>() : nullptr;
        a.dst = dst.data_ptr<scalar_t>();
        a.dst_member = dst.stride(0);
        a.dst_row = dst.stride(1);
        a.members = M;
        a.rows = B;
        a.n = H;
        a.activation = act;
        launch_epilogue(a);
      });
      h = dst;
    }
  }
  return out.scalar_type() == weight_hh.scalar_type() ? out : out.to(weight_hh.scalar_type());
}

}  // namespace
}  // namespace cuda
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  // The casts make a signature that differs from the CPU kernels' (ops.h) a compile error, not a load-time abort.
  m.impl("perturbed_rnn", static_cast<dopamine_fast::PerturbedRnnKernel*>(&dopamine_fast::cuda::perturbed_rnn_cuda));
}
