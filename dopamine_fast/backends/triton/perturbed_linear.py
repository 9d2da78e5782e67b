"""Triton perturbed linear layer for K members (``perturbed_linear_reference`` is the spec).

Full rank: a tiled matmul, one program per (member, row tile, output tile), looping over input tiles; each
program regenerates its tile of the member's noise E in registers and multiplies x by (W + s sigma E)^T, so the
K perturbed weight matrices never exist in memory. Bias, bias noise and the activation are the epilogue.
Low rank: the unperturbed x W^T is one GEMM over all K*B rows (torch.matmul); the factors of every noise id are
generated once into a small buffer, and a correction kernel per (member, row tile) adds s sigma (x B) A^T / sqrt(r),
the bias noise and the activation.
The jit helpers, shared with the perturbed RNN, are in ``common``.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .common import (ACTIVATION_CODES, compute_zeros, epilogue, exact_fp32, first_noise_id, low_rank_factors,
                     low_rank_outputs, low_rank_project, member_strides, member_tile, perturbed_matmul, tile_size)
from .philox import as_u32, counter_jit, counter_words


@counter_jit
def _full_rank_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_rows, n_in, n_out,
                      stride_xm, stride_xb, stride_xi, stride_wo, stride_wi, stride_ym, stride_yb, stride_yo,
                      sigma, k0, k1, step, w_stream, b_stream, first_member,
                      HAS_BIAS: tl.constexpr, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr,
                      ACTIVATION: tl.constexpr, ALIGNED: tl.constexpr, EXACT_FP32: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_IN: tl.constexpr):
    m, offs_b, mask_b, offs_o, mask_o, noise_id, sign = member_tile(tl.program_id(0), first_member, n_rows, n_out,
                                                                    BASELINE, ANTITHETIC, BLOCK_B, BLOCK_O)
    acc = compute_zeros((BLOCK_B, BLOCK_O), w_ptr)
    scale = sign.to(acc.dtype) * sigma
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    acc = perturbed_matmul(acc, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, w_ptr, stride_wo, stride_wi,
                           offs_b, mask_b, offs_o, mask_o, n_in, scale, noise_id, step32, as_u32(w_stream), key0,
                           key1, ALIGNED, BLOCK_IN, EXACT_FP32)
    epilogue(acc, y_ptr + m.to(tl.int64) * stride_ym, stride_yb, stride_yo, offs_b, mask_b, offs_o, mask_o, scale,
             noise_id, step32, key0, key1, b_ptr, b_stream, b_ptr, b_stream, HAS_BIAS, False, ACTIVATION)


@counter_jit
def _low_rank_kernel(base_ptr, x_ptr, f_ptr, b_ptr, y_ptr, n_rows, n_in, n_out, rank,
                     stride_basem, stride_baseb, stride_baseo, stride_xm, stride_xb, stride_xi, stride_f,
                     stride_ym, stride_yb, stride_yo, sigma, k0, k1, step, b_stream, first_member, first_id,
                     HAS_BIAS: tl.constexpr, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr,
                     ACTIVATION: tl.constexpr, EXACT_FP32: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_IN: tl.constexpr, RANK_TILE: tl.constexpr):
    # One program per (member, row tile): project the rows on B once, then sweep the output tiles.
    m, offs_b, mask_b, _, _, noise_id, sign = member_tile(tl.program_id(0), first_member, n_rows, 1, BASELINE,
                                                          ANTITHETIC, BLOCK_B, 1)
    t = compute_zeros((BLOCK_B, RANK_TILE), y_ptr)
    scale = sign.to(t.dtype) * sigma
    a_ptr = f_ptr + (noise_id.to(tl.int64) - first_id) * stride_f  # factors of this member's noise id: A, then B
    t = low_rank_project(t, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, offs_b, mask_b, n_in,
                         a_ptr + n_out * rank, rank, BLOCK_IN, EXACT_FP32)
    t = t * (scale / tl.sqrt(tl.cast(rank, t.dtype)))
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    low_rank_outputs(base_ptr + m.to(tl.int64) * stride_basem, stride_baseb, stride_baseo,
                     y_ptr + m.to(tl.int64) * stride_ym, stride_yb, stride_yo, offs_b, mask_b, n_out, rank, t, a_ptr,
                     t, a_ptr, scale, noise_id, step32, key0, key1, b_ptr, b_stream, b_ptr, b_stream, False, HAS_BIAS,
                     False, ACTIVATION, EXACT_FP32, BLOCK_O)


def launch_full_rank(y, x, weight, bias, seed, step, weight_stream, bias_stream, sigma, baseline, antithetic,
                     activation: int, first_member: int):
    """Full-rank perturbed linear layer of members ``first_member ..`` into ``y`` [K, B, out]; ``x`` is [K, B, in]
    or shared [B, in]."""
    num_members, n_rows, n_out = y.shape
    n_in = weight.shape[1]
    if y.numel() == 0:
        return
    block_b, block_o, block_in = tile_size(n_rows), tile_size(n_out), tile_size(n_in)
    grid = (num_members * triton.cdiv(n_rows, block_b) * triton.cdiv(n_out, block_o),)
    k0, k1, step32, w_stream = counter_words(seed, step, weight_stream)
    _full_rank_kernel[grid](
        x, weight, bias if bias is not None else weight, y, n_rows, n_in, n_out,
        *member_strides(x, 2), *weight.stride(), *y.stride(), sigma, k0, k1, step32, w_stream, bias_stream,
        first_member, HAS_BIAS=bias is not None, BASELINE=int(baseline), ANTITHETIC=antithetic, ACTIVATION=activation,
        ALIGNED=n_in % 4 == 0, EXACT_FP32=exact_fp32(weight.dtype), BLOCK_B=block_b, BLOCK_O=block_o,
        BLOCK_IN=block_in)


def launch_low_rank(y, base, x, factors, bias, seed, step, bias_stream, sigma, rank, baseline, antithetic,
                    activation: int, n_in: int, first_member: int):
    """``y = act(base + s sigma (x B) A^T / sqrt(r) + perturbed bias)`` for members ``first_member ..``, with
    ``factors`` from ``low_rank_factors``; ``base``, ``x`` may be shared."""
    num_members, n_rows, n_out = y.shape
    if y.numel() == 0:
        return
    block_b = tile_size(n_rows)
    grid = (num_members * triton.cdiv(n_rows, block_b),)
    k0, k1, step32, _ = counter_words(seed, step, bias_stream)
    _low_rank_kernel[grid](
        base, x, factors, bias if bias is not None else y, y, n_rows, n_in, n_out, rank,
        *member_strides(base, 2), *member_strides(x, 2), factors.stride(0), *y.stride(), sigma, k0, k1, step32,
        bias_stream, first_member, first_noise_id(first_member, baseline, antithetic), HAS_BIAS=bias is not None,
        BASELINE=int(baseline), ANTITHETIC=antithetic,
        ACTIVATION=activation, EXACT_FP32=exact_fp32(y.dtype), BLOCK_B=block_b, BLOCK_O=tile_size(n_out),
        BLOCK_IN=tile_size(n_in), RANK_TILE=tile_size(rank, cap=1 << 30))


def perturbed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seed: int, step: int,
                     weight_stream: int, bias_stream: int, sigma: float, num_members: int, rank: int, baseline: bool,
                     antithetic: bool, activation: str, first_member: int = 0) -> torch.Tensor:
    x = x.to(weight.dtype)
    y = weight.new_empty(num_members, x.shape[-2], weight.shape[0])
    code = ACTIVATION_CODES[activation]
    if rank == 0:
        launch_full_rank(y, x, weight, bias, seed, step, weight_stream, bias_stream, sigma, baseline, antithetic,
                         code, first_member)
    else:
        factors = low_rank_factors(weight, seed, step, weight_stream, rank, num_members, baseline, antithetic,
                                   first_member)
        base = torch.matmul(x, weight.t())  # [B, out] once when x is shared: the plain-inference floor
        launch_low_rank(y, base, x, factors, bias, seed, step, bias_stream, sigma, rank, baseline, antithetic, code,
                        weight.shape[1], first_member)
    return y
