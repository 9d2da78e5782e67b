// CPU kernel of perturbed_rnn: K perturbed Elman RNNs, h_t = act(x_t W_ih,k^T + b_ih,k + h_{t-1} W_hh,k^T + b_hh,k),
// for the members k = first_member .. first_member + K - 1 (each member's outputs the same bits in any range).
//
// Members are independent, so full rank runs each member's whole sequence, in blocks of batch rows: its noise is
// generated once per call and thread (not per step) into per-thread weights, and each step of a block is two GEMMs,
// x_t W_ih^T and h W_hh^T. Low rank splits the members into blocks (the grid of member_blocks.h) that each run the
// whole sequence:
// per step h W_hh^T (and x_t W_ih^T for per-member x) is one GEMM over the block's rows, and each row adds its
// member's low-rank corrections and bias (low_rank_rows.h) from factors generated once per call (they are
// small); a shared x is projected once for all members (all steps at once for a batch that fits one block, else
// step by step in each block). Without h0 the initial state is zero: only one block's (or one member's) state
// exists at a time, never every member's.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
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

constexpr int64_t kBlockRows = 256;  // most rows (members x batch) one low-rank block carries through the sequence
constexpr int64_t kFullRankRows = 128;  // batch rows one full-rank task carries through the sequence

struct RnnArgs {
  at::Tensor x;    // [B, T, in] (shared) or [K, B, T, in], contiguous, compute dtype
  std::optional<at::Tensor> h0;  // [B, H] (shared) or [K, B, H], contiguous, compute dtype; none: zeros
  at::Tensor w_ih, w_hh;  // contiguous
  std::optional<at::Tensor> b_ih, b_hh;
  NoiseKey keys[4];  // weight_ih, weight_hh, bias_ih, bias_hh
  double sigma;
  int64_t first_member, num_members, rank;
  bool baseline, antithetic, return_sequence;
  Activation act;
};

// Each member's combined bias (b_ih + s e_ih) + (b_hh + s e_hh): [K, H], small, so made for all members at once.
at::Tensor member_biases(const RnnArgs& a) {
  const cpu::Members members{a.first_member, a.num_members, a.baseline, a.antithetic, a.sigma};
  at::Tensor bias = at::zeros({a.num_members, a.w_hh.size(0)}, a.w_hh.options());
  if (a.b_ih) bias.add_(cpu::member_vectors(*a.b_ih, a.keys[2], members));
  if (a.b_hh) bias.add_(cpu::member_vectors(*a.b_hh, a.keys[3], members));
  return bias;
}

template <typename T>
void rnn_full_rank(const RnnArgs& a, const at::Tensor& bias, at::Tensor& out) {
  const int64_t hidden = a.w_hh.size(0), in = a.w_ih.size(1);
  const int64_t batch = a.x.size(-3), steps = a.x.size(-2);
  const bool shared = a.x.dim() == 3;
  const auto groups = cpu::member_groups(a.first_member, a.num_members, a.baseline, a.antithetic);
  // Tasks are (group, block of rows): the blocks depend on the batch alone, so a member's GEMMs are the same in any
  // member range (bit for bit), both threads work when a call holds one member, and the scratch is per thread,
  // not per row.
  const int64_t row_blocks = (batch + kFullRankRows - 1) / kFullRankRows;
  const int64_t tasks = static_cast<int64_t>(groups.size()) * row_blocks;
  cpu::parallel_for(0, tasks, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> e_ih(hidden * in), e_hh(hidden * hidden);
    at::Tensor w_ih = at::empty({hidden, in}, a.w_hh.options());
    at::Tensor w_hh = at::empty({hidden, hidden}, a.w_hh.options());
    at::Tensor h_prev = at::empty({std::min(batch, kFullRankRows), hidden}, a.w_hh.options());
    at::Tensor h_next = at::empty_like(h_prev);
    int64_t noise_of = -1;  // the group whose noise e_ih, e_hh hold: a thread's tasks run group by group
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t g = i / row_blocks, r0 = i % row_blocks * kFullRankRows;
      const int64_t rows = std::min(kFullRankRows, batch - r0);
      const cpu::MemberGroup& grp = groups[g];
      if (grp.perturbed && noise_of != g) {
        cpu::noise_normals(a.keys[0], grp.id, 0, hidden * in, e_ih.data());
        cpu::noise_normals(a.keys[1], grp.id, 0, hidden * hidden, e_hh.data());
        noise_of = g;
      }
      at::Tensor hp = h_prev.narrow(0, 0, rows), hn = h_next.narrow(0, 0, rows);
      for (int64_t m = grp.first; m < grp.first + grp.count; ++m) {
        if (grp.perturbed) {
          const T s = static_cast<T>(a.sigma) *
                      static_cast<T>(member_noise(a.first_member + m, a.baseline, a.antithetic).sign);
          const T* wi = a.w_ih.data_ptr<T>();
          const T* wh = a.w_hh.data_ptr<T>();
          T* wip = w_ih.data_ptr<T>();
          T* whp = w_hh.data_ptr<T>();
          for (int64_t j = 0; j < hidden * in; ++j) wip[j] = wi[j] + s * static_cast<T>(e_ih[j]);
          for (int64_t j = 0; j < hidden * hidden; ++j) whp[j] = wh[j] + s * static_cast<T>(e_hh[j]);
        }
        const at::Tensor& wik = grp.perturbed ? w_ih : a.w_ih;
        const at::Tensor& whk = grp.perturbed ? w_hh : a.w_hh;
        const at::Tensor xm = (shared ? a.x : a.x[m]).narrow(0, r0, rows);  // [rows, T, in]
        at::Tensor om = out[m].narrow(0, r0, rows);
        const bool has_h0 = a.h0.has_value();
        if (has_h0) hp.copy_((a.h0->dim() == 2 ? *a.h0 : (*a.h0)[m]).narrow(0, r0, rows));
        for (int64_t t = 0; t < steps; ++t) {
          // h_t = act(x_t W_ih^T + b + h_{t-1} W_hh^T); the zero initial state contributes nothing.
          at::addmm_out(hn, bias[m], xm.select(1, t), wik.t());
          if (t > 0 || has_h0) hn.addmm_(hp, whk.t());
          cpu::apply_activation_(hn, a.act);
          if (a.return_sequence) om.select(1, t).copy_(hn);
          std::swap(hp, hn);
        }
        if (!a.return_sequence) om.copy_(hp);
      }
    }
  });
}

template <typename T>
void rnn_low_rank(const RnnArgs& a, const at::Tensor& bias, at::Tensor& out) {
  const int64_t hidden = a.w_hh.size(0), in = a.w_ih.size(1), members = a.num_members;
  const int64_t batch = a.x.size(-3), steps = a.x.size(-2), r = a.rank;
  const bool shared = a.x.dim() == 3;
  const cpu::Members mem{a.first_member, members, a.baseline, a.antithetic, a.sigma};
  const auto f_ih = cpu::member_factors(hidden, in, r, a.keys[0], mem, a.w_hh.options());
  const auto f_hh = cpu::member_factors(hidden, hidden, r, a.keys[1], mem, a.w_hh.options());
  // A shared x needs its input projection once for all members: for all steps at once ([T, B, H], each step
  // contiguous) while the batch fits one block, else step by step in each block, so that no [T, B, H] exists for a
  // large batch (one block is then one member: the projection costs in / H of the block's GEMMs again).
  const bool project_once = shared && batch <= kBlockRows;
  const at::Tensor xw = project_once ? at::matmul(a.x.transpose(0, 1), a.w_ih.t()).contiguous() : at::Tensor();
  const int64_t x_member = shared ? 0 : batch * steps * in;
  const auto blocks = cpu::member_blocks(a.first_member, members, cpu::members_per_block(batch, kBlockRows),
                                         a.baseline);
  // Each block runs its whole sequence alone: no synchronisation per step, its state stays in cache, and its
  // GEMMs with the shared weights cover all of its rows. Threads take blocks as they finish, so a thread slowed
  // by another process on its core does not hold the others back.
  std::atomic<int64_t> next{0};
  const int64_t num_blocks = static_cast<int64_t>(blocks.size());
  int64_t most_rows = 0;
  for (const auto& b : blocks) most_rows = std::max(most_rows, b.size);
  cpu::parallel_for(0, std::min<int64_t>(num_blocks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    // One set of buffers per thread for all of its blocks: allocating megabytes per block left glibc's per-thread
    // heaps fragmented (a 9-member rank-1 call of the paper's RNN peaked at 196 MiB instead of 133).
    at::Tensor h_buf = at::empty({most_rows, batch, hidden}, a.w_hh.options());
    at::Tensor pre_buf = at::empty_like(h_buf);
    at::Tensor x_buf = shared ? at::Tensor() : at::empty({most_rows * batch, in}, a.x.options());
    at::Tensor xw_t = shared && !project_once ? at::empty({batch, hidden}, a.x.options()) : at::Tensor();
    for (int64_t blk = next++; blk < num_blocks; blk = next++) {
      // The block's state holds all of its members, those of the call at [pad, pad + nk) (member_blocks.h): the
      // GEMMs see the block's full row count in every call. The rest stay zero and are never read out.
      const int64_t k0 = blocks[blk].first, nk = blocks[blk].count, pad = blocks[blk].pad, size = blocks[blk].size;
      at::Tensor h_all = h_buf.narrow(0, 0, size).zero_();
      at::Tensor pre_all = pre_buf.narrow(0, 0, size).zero_();
      at::Tensor h = h_all.narrow(0, pad, nk), pre = pre_all.narrow(0, pad, nk);
      if (a.h0) h.copy_(a.h0->dim() == 2 ? a.h0->expand({nk, batch, hidden}) : a.h0->narrow(0, k0, nk));
      at::Tensor x_t = shared ? at::Tensor() : x_buf.narrow(0, 0, size * batch).zero_();
      for (int64_t t = 0; t < steps; ++t) {
        if (xw_t.defined()) at::mm_out(xw_t, a.x.select(1, t), a.w_ih.t());
        // Each row's base, bias and both low-rank corrections in one pass (the factors are small).
        const std::vector<cpu::LowRankTerm<T>> terms{
            {a.x.data_ptr<T>() + k0 * x_member + t * in, x_member, steps * in, in,
             f_ih.first.data_ptr<T>() + k0 * r * hidden, f_ih.second.data_ptr<T>() + k0 * r * in},
            {h.data_ptr<T>(), batch * hidden, hidden, hidden, f_hh.first.data_ptr<T>() + k0 * r * hidden,
             f_hh.second.data_ptr<T>() + k0 * r * hidden}};
        cpu::low_rank_rows<T>(pre.data_ptr<T>(), nk, batch, hidden, r,
                              !shared ? nullptr
                              : project_once ? xw.data_ptr<T>() + t * batch * hidden
                                             : xw_t.data_ptr<T>(),
                              bias.data_ptr<T>() + k0 * hidden, terms);
        at::Tensor pre2d = pre_all.view({-1, hidden});
        pre2d.addmm_(h_all.view({-1, hidden}), a.w_hh.t());
        if (!shared) {
          x_t.view({-1, batch, in}).narrow(0, pad, nk).copy_(a.x.narrow(0, k0, nk).select(2, t));
          pre2d.addmm_(x_t, a.w_ih.t());
        }
        cpu::apply_activation_(pre, a.act);
        if (a.return_sequence) out.narrow(0, k0, nk).select(2, t).copy_(pre);
        std::swap(h, pre);
        std::swap(h_all, pre_all);
      }
      if (!a.return_sequence) out.narrow(0, k0, nk).copy_(h);
    }
  });
}

at::Tensor perturbed_rnn_cpu(const at::Tensor& x, const std::optional<at::Tensor>& h0, const at::Tensor& weight_ih,
                             const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                             const std::optional<at::Tensor>& bias_hh, int64_t seed, int64_t step,
                             c10::IntArrayRef streams, double sigma, int64_t num_members, int64_t rank,
                             bool baseline, bool antithetic, c10::string_view nonlinearity, bool return_sequence,
                             int64_t first_member) {
  const Activation act = parse_activation(std::string(nonlinearity), /*allowed_rnn=*/true);
  // Half and bfloat16 layers are computed in float32 and rounded once at the end. Inputs are detached: the op is
  // not differentiable, so nothing in it may carry autograd history (parallel.h).
  const at::ScalarType dtype = weight_hh.scalar_type();
  const at::ScalarType compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = weight_hh.options().dtype(compute);
  const int64_t hidden = weight_hh.size(0), batch = x.size(-3), steps = x.size(-2);
  const std::optional<at::Tensor> h_init =
      h0 ? std::optional<at::Tensor>(h0->detach().to(compute).contiguous()) : std::nullopt;
  auto vec = [&](const std::optional<at::Tensor>& b) {
    return b ? std::optional<at::Tensor>(b->detach().to(compute).contiguous()) : std::nullopt;
  };
  RnnArgs a{x.detach().to(compute).contiguous(),
            h_init,
            weight_ih.detach().to(compute).contiguous(),
            weight_hh.detach().to(compute).contiguous(),
            vec(bias_ih),
            vec(bias_hh),
            {make_noise_key(seed, step, streams[0]), make_noise_key(seed, step, streams[1]),
             make_noise_key(seed, step, streams[2]), make_noise_key(seed, step, streams[3])},
            sigma,
            first_member,
            num_members,
            rank,
            baseline,
            antithetic,
            return_sequence,
            act};
  at::Tensor out = return_sequence ? at::empty({num_members, batch, steps, hidden}, opts)
                                   : at::empty({num_members, batch, hidden}, opts);
  if (steps == 0) {
    if (!return_sequence) {
      if (h_init) {
        out.copy_(h_init->dim() == 2 ? h_init->expand({num_members, batch, hidden}) : *h_init);
      } else {
        out.zero_();
      }
    }
    return out.to(dtype);
  }
  if (out.numel() == 0) return out.to(dtype);
  const at::Tensor bias = member_biases(a);
  AT_DISPATCH_FLOATING_TYPES(compute, "perturbed_rnn", [&] {
    if (rank > 0) {
      rnn_low_rank<scalar_t>(a, bias, out);
    } else {
      rnn_full_rank<scalar_t>(a, bias, out);
    }
  });
  return out.to(dtype);
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CPU, m) {
  m.impl("perturbed_rnn", static_cast<dopamine_fast::PerturbedRnnKernel*>(&dopamine_fast::perturbed_rnn_cpu));
}
