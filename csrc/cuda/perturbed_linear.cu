// CUDA kernels of perturbed_linear. Noise is regenerated from (seed, step, stream, id, element) as docs/noise.md
// specifies and never stored per member: full rank rebuilds each tile of eps in shared memory
// (perturbed_matmul.cuh), low rank keeps only the factors ((out + in) * rank normals per noise id, low_rank.cuh).
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

at::Tensor perturbed_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 int64_t seed, int64_t step, int64_t weight_stream, int64_t bias_stream, double sigma,
                                 int64_t num_members, int64_t rank, bool baseline, bool antithetic,
                                 c10::string_view activation, int64_t first_member) {
  TORCH_CHECK(weight.is_cuda(), "weight must be a CUDA tensor, got ", weight.device());
  const int act = static_cast<int>(parse_activation(std::string(activation), /*allowed_rnn=*/false));
  const c10::cuda::CUDAGuard guard(weight.device());
  const auto ct = compute_type(weight.scalar_type());
  const auto opts = weight.options().dtype(ct);
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor xc = x.to(ct).contiguous();
  const std::optional<at::Tensor> b =
      bias.has_value() ? std::optional<at::Tensor>(bias->to(ct).contiguous()) : std::nullopt;
  const bool shared = x.dim() == 2;
  const int64_t M = num_members, rows = x.size(-2), out = w.size(0), in = w.size(1);
  const NoiseKey key = make_noise_key(seed, step, weight_stream);
  at::Tensor y;

  if (rank == 0) {
    y = at::empty({M, rows, out}, opts);
    AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_linear", [&] {
      MatmulParams<scalar_t> p =
          base_params<scalar_t>(b, bias_stream, std::nullopt, 0, key, sigma, first_member, M, baseline, act);
      p.seg[0] = segment<scalar_t>(xc, shared ? 0 : rows * in, in, 0, w, weight_stream);
      p.num_seg = 1;
      p.y = y.data_ptr<scalar_t>();
      p.y_member = rows * out;
      p.y_row = out;
      p.rows = rows;
      p.out = out;
      launch_perturbed_matmul(p, antithetic);
    });
  } else {
    // x (W + s sigma A B^T / sqrt(r))^T = x W^T + (s sigma / sqrt(r)) (x B) A^T: cuBLAS does both products.
    const MemberTable table = member_table(first_member, M, baseline, antithetic, opts);
    const at::Tensor base = at::matmul(xc, w.t()).expand({M, rows, out});
    if (table.id_range.count == 0) {
      y = base.contiguous();
    } else {
      const auto [fa, fb] = low_rank_factors(out, in, rank, table.id_range, key, opts);
      const at::Tensor t = project_rows(xc, shared, fb, table) *
                           (table.signs * (sigma / std::sqrt(static_cast<double>(rank)))).view({M, 1, 1});
      y = at::baddbmm(base, t, fa.index_select(0, table.ids).transpose(1, 2));
    }
    const at::Tensor bm = member_biases(b, bias_stream, std::nullopt, 0, key, sigma, M, table);
    if (bm.defined() || act != static_cast<int>(Activation::kNone)) {
      AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_linear", [&] {
        EpilogueArgs<scalar_t> a{};
        a.src = y.data_ptr<scalar_t>();
        a.bias = bm.defined() ? bm.data_ptr<scalar_t>() : nullptr;
        a.dst = y.data_ptr<scalar_t>();
        a.dst_member = rows * out;
        a.dst_row = out;
        a.members = M;
        a.rows = rows;
        a.n = out;
        a.activation = act;
        launch_epilogue(a);
      });
    }
  }
  return y.scalar_type() == weight.scalar_type() ? y : y.to(weight.scalar_type());
}

}  // namespace
}  // namespace cuda
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  // The casts make a signature that differs from the CPU kernels' (ops.h) a compile error, not a load-time abort.
  m.impl("perturbed_linear", static_cast<dopamine_fast::PerturbedLinearKernel*>(&dopamine_fast::cuda::perturbed_linear_cuda));
}
