"""Triton perturbed Elman RNN for K members (``perturbed_rnn_reference`` is the spec): one launch per time step.

Each step is the perturbed linear layer with two terms, ``act(x_t (W_ih + s sigma E_ih)^T + h (W_hh + ...)^T +
biases)``, built from the pieces of ``common``: full rank regenerates both noise tiles in
registers; low rank generates the factors once for the sequence and adds their corrections to the two plain GEMMs
of each step. ``h_{t-1}`` is read from the
previous step's output (the sequence, or one of two ping-pong state buffers), so nothing is copied between steps.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl

from .common import (ACTIVATION_CODES, compute_zeros, epilogue, exact_fp32, first_noise_id, low_rank_factors,
                     low_rank_outputs, low_rank_project, member_strides, member_tile, perturbed_matmul, tile_size)
from .philox import as_u32, counter_jit, counter_words


@counter_jit
def _full_rank_step_kernel(x_ptr, h_ptr, wih_ptr, whh_ptr, bih_ptr, bhh_ptr, out_ptr, n_rows, n_in, n_hidden,
                           stride_xm, stride_xb, stride_xi, stride_hm, stride_hb, stride_hh,
                           stride_wih_o, stride_wih_i, stride_whh_o, stride_whh_i, stride_om, stride_ob, stride_oh,
                           sigma, k0, k1, step, stream_wih, stream_whh, stream_bih, stream_bhh, first_member,
                           HAS_H: tl.constexpr, HAS_BIH: tl.constexpr, HAS_BHH: tl.constexpr,
                           BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr, ACTIVATION: tl.constexpr,
                           ALIGNED_IH: tl.constexpr, ALIGNED_HH: tl.constexpr, EXACT_FP32: tl.constexpr,
                           BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_IN: tl.constexpr,
                           BLOCK_H: tl.constexpr):
    m, offs_b, mask_b, offs_o, mask_o, noise_id, sign = member_tile(tl.program_id(0), first_member, n_rows,
                                                                    n_hidden, BASELINE, ANTITHETIC, BLOCK_B, BLOCK_O)
    acc = compute_zeros((BLOCK_B, BLOCK_O), whh_ptr)
    scale = sign.to(acc.dtype) * sigma
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    acc = perturbed_matmul(acc, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, wih_ptr, stride_wih_o,
                           stride_wih_i, offs_b, mask_b, offs_o, mask_o, n_in, scale, noise_id, step32,
                           as_u32(stream_wih), key0, key1, ALIGNED_IH, BLOCK_IN, EXACT_FP32)
    if HAS_H:  # h_{-1} = 0 when no h0 is given: the first step has no recurrent term
        acc = perturbed_matmul(acc, h_ptr + m.to(tl.int64) * stride_hm, stride_hb, stride_hh, whh_ptr, stride_whh_o,
                               stride_whh_i, offs_b, mask_b, offs_o, mask_o, n_hidden, scale, noise_id, step32,
                               as_u32(stream_whh), key0, key1, ALIGNED_HH, BLOCK_H, EXACT_FP32)
    epilogue(acc, out_ptr + m.to(tl.int64) * stride_om, stride_ob, stride_oh, offs_b, mask_b, offs_o, mask_o, scale,
             noise_id, step32, key0, key1, bih_ptr, stream_bih, bhh_ptr, stream_bhh, HAS_BIH, HAS_BHH, ACTIVATION)


@counter_jit
def _low_rank_step_kernel(base_ptr, x_ptr, h_ptr, fih_ptr, fhh_ptr, bih_ptr, bhh_ptr, out_ptr, n_rows, n_in, n_hidden,
                          rank, stride_basem, stride_baseb, stride_baseh, stride_xm, stride_xb, stride_xi,
                          stride_hm, stride_hb, stride_hh, stride_fih, stride_fhh, stride_om, stride_ob, stride_oh,
                          sigma, k0, k1, step, stream_bih, stream_bhh, first_member, first_id,
                          HAS_H: tl.constexpr, HAS_BIH: tl.constexpr, HAS_BHH: tl.constexpr,
                          BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr, ACTIVATION: tl.constexpr,
                          EXACT_FP32: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr,
                          BLOCK_IN: tl.constexpr, BLOCK_H: tl.constexpr, RANK_TILE: tl.constexpr):
    m, offs_b, mask_b, _, _, noise_id, sign = member_tile(tl.program_id(0), first_member, n_rows, 1, BASELINE,
                                                          ANTITHETIC, BLOCK_B, 1)
    t_ih = compute_zeros((BLOCK_B, RANK_TILE), out_ptr)
    t_hh = compute_zeros((BLOCK_B, RANK_TILE), out_ptr)
    scale = sign.to(t_ih.dtype) * sigma
    factor_scale = scale / tl.sqrt(tl.cast(rank, t_ih.dtype))
    a_ih = fih_ptr + (noise_id.to(tl.int64) - first_id) * stride_fih  # this member's factors: A, then B
    a_hh = fhh_ptr + (noise_id.to(tl.int64) - first_id) * stride_fhh
    t_ih = low_rank_project(t_ih, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, offs_b, mask_b, n_in,
                            a_ih + n_hidden * rank, rank, BLOCK_IN, EXACT_FP32)
    t_ih = t_ih * factor_scale
    if HAS_H:
        t_hh = low_rank_project(t_hh, h_ptr + m.to(tl.int64) * stride_hm, stride_hb, stride_hh, offs_b, mask_b,
                                n_hidden, a_hh + n_hidden * rank, rank, BLOCK_H, EXACT_FP32)
        t_hh = t_hh * factor_scale
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    low_rank_outputs(base_ptr + m.to(tl.int64) * stride_basem, stride_baseb, stride_baseh,
                     out_ptr + m.to(tl.int64) * stride_om, stride_ob, stride_oh, offs_b, mask_b, n_hidden, rank, t_ih,
                     a_ih, t_hh, a_hh, scale, noise_id, step32, key0, key1, bih_ptr, stream_bih, bhh_ptr, stream_bhh,
                     HAS_H, HAS_BIH, HAS_BHH, ACTIVATION, EXACT_FP32, BLOCK_O)


def _step_outputs(out: torch.Tensor, steps: int, return_sequence: bool):
    """The tensor each step writes: slices of the sequence, or two state buffers alternating so the last is ``out``."""
    if return_sequence:
        return [out.select(2, t) for t in range(steps)]
    spare = torch.empty_like(out)
    return [out if (steps - 1 - t) % 2 == 0 else spare for t in range(steps)]


def perturbed_rnn(x: torch.Tensor, h0: Optional[torch.Tensor], weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                  bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor], seed: int, step: int,
                  streams: List[int], sigma: float, num_members: int, rank: int, baseline: bool, antithetic: bool,
                  nonlinearity: str, return_sequence: bool, first_member: int = 0) -> torch.Tensor:
    dtype = weight_hh.dtype
    hidden, n_in = weight_ih.shape
    x = x.to(dtype)
    batch, steps = x.shape[-3], x.shape[-2]
    shape = (num_members, batch, steps, hidden) if return_sequence else (num_members, batch, hidden)
    out = weight_hh.new_empty(shape)
    if out.numel() == 0:
        return out
    h = None if h0 is None else h0.to(dtype)
    if steps == 0 and not return_sequence:  # no step runs: the last state is h0
        return out.copy_(h) if h is not None else out.zero_()
    k0, k1, step32, _ = counter_words(seed, step, 0)
    block_b = tile_size(batch)
    has = dict(HAS_BIH=bias_ih is not None, HAS_BHH=bias_hh is not None, BASELINE=int(baseline),
               ANTITHETIC=antithetic, ACTIVATION=ACTIVATION_CODES[nonlinearity], EXACT_FP32=exact_fp32(dtype),
               BLOCK_B=block_b, BLOCK_O=tile_size(hidden), BLOCK_IN=tile_size(n_in), BLOCK_H=tile_size(hidden))
    bih = bias_ih if bias_ih is not None else weight_hh
    bhh = bias_hh if bias_hh is not None else weight_hh
    if rank:  # every id's factors once for the whole sequence
        f_ih, f_hh = (low_rank_factors(w, seed, step, stream, rank, num_members, baseline, antithetic, first_member)
                      for w, stream in ((weight_ih, streams[0]), (weight_hh, streams[1])))
    for t, h_new in enumerate(_step_outputs(out, steps, return_sequence)):
        x_t = x.select(-2, t)
        h_arg = h if h is not None else h_new  # unread when HAS_H is false
        if rank == 0:
            grid = (num_members * triton.cdiv(batch, block_b) * triton.cdiv(hidden, has["BLOCK_O"]),)
            _full_rank_step_kernel[grid](
                x_t, h_arg, weight_ih, weight_hh, bih, bhh, h_new, batch, n_in, hidden, *member_strides(x_t, 2),
                *member_strides(h_arg, 2), *weight_ih.stride(), *weight_hh.stride(), *h_new.stride(), sigma, k0, k1,
                step32, *streams, first_member, HAS_H=h is not None, ALIGNED_IH=n_in % 4 == 0,
                ALIGNED_HH=hidden % 4 == 0, **has)
        else:
            base = torch.matmul(x_t, weight_ih.t())
            if h is not None:
                base = base + torch.matmul(h, weight_hh.t())  # either may lack the member dim
            grid = (num_members * triton.cdiv(batch, block_b),)
            _low_rank_step_kernel[grid](
                base, x_t, h_arg, f_ih, f_hh, bih, bhh, h_new, batch, n_in, hidden, rank, *member_strides(base, 2),
                *member_strides(x_t, 2), *member_strides(h_arg, 2), f_ih.stride(0), f_hh.stride(0), *h_new.stride(),
                sigma, k0, k1, step32, *streams[2:], first_member, first_noise_id(first_member, baseline, antithetic),
                HAS_H=h is not None, RANK_TILE=tile_size(rank, cap=1 << 30),
                **has)
        h = h_new
    return out
