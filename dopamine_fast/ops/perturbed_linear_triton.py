"""Triton perturbed linear layer for K members (``perturbed_linear_reference`` is the spec).

Full rank: a tiled matmul, one program per (member, row tile, output tile), looping over input tiles; each
program regenerates its tile of the member's noise E in registers and multiplies x by (W + s sigma E)^T, so the
K perturbed weight matrices never exist in memory. Bias, bias noise and the activation are the epilogue.
Low rank: the unperturbed x W^T is one GEMM over all K*B rows (torch.matmul); the factors of every noise id are
generated once into a small buffer, and a correction kernel per (member, row tile) adds s sigma (x B) A^T / sqrt(r),
the bias noise and the activation.
The jit helpers here are shared with the perturbed RNN.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..plan import num_noise_ids
from .noise import low_rank_numel
from .noise_triton import fill_noise
from .philox_triton import as_u32, block_normals, counter_words, element_normals, interleave4, member_noise
from .triton_library import launch, triton_library_op

ACTIVATION_CODES = {"none": 0, "tanh": 1, "relu": 2, "sigmoid": 3}
MIN_TILE = 16  # tl.dot needs every tile dimension >= 16
MAX_TILE = 64


def tile_size(n: int, cap: int = MAX_TILE) -> int:
    return max(MIN_TILE, min(cap, triton.next_power_of_2(max(1, n))))


def exact_fp32(dtype: torch.dtype) -> bool:
    """Whether tl.dot must keep fp32 accuracy (tf32x3 on tensor cores) rather than use the inputs' own precision."""
    return dtype == torch.float32


@triton.jit
def dot(a, b, acc, EXACT_FP32: tl.constexpr):
    """``acc + a @ b``: fp64 stays IEEE, fp32 uses three TF32 products (about fp32 accuracy, on tensor cores)."""
    if a.dtype == tl.float64:
        return tl.dot(a, b, acc, input_precision="ieee")
    elif EXACT_FP32:
        return tl.dot(a, b, acc, input_precision="tf32x3")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def compute_zeros(shape: tl.constexpr, ptr):
    """Zeros in the compute dtype of ``ptr``'s tensor: fp64 for fp64, fp32 for every other float dtype."""
    if ptr.dtype.element_ty == tl.float64:
        return tl.zeros(shape, tl.float64)
    else:
        return tl.zeros(shape, tl.float32)


@triton.jit
def perturbed_matmul(acc, x_ptr, stride_xb, stride_xi, w_ptr, stride_wo, stride_wi, offs_b, mask_b, offs_o, mask_o,
                     n_in, scale, noise_id, step, stream, k0, k1,
                     ALIGNED: tl.constexpr, BLOCK_IN: tl.constexpr, EXACT_FP32: tl.constexpr):
    """``acc + x (W + scale E)^T`` for one (row tile, output tile); E element (o, i) is stream element o*n_in + i.

    ``ALIGNED`` (n_in % 4 == 0): every tile row starts a Philox block, so one call feeds four elements.
    """
    for i0 in range(0, n_in, BLOCK_IN):
        offs_i = i0 + tl.arange(0, BLOCK_IN)
        mask_i = offs_i < n_in
        x = tl.load(x_ptr + offs_b[:, None] * stride_xb + offs_i[None, :] * stride_xi,
                    mask=mask_b[:, None] & mask_i[None, :], other=0.0)
        w = tl.load(w_ptr + offs_o[:, None] * stride_wo + offs_i[None, :] * stride_wi,
                    mask=mask_o[:, None] & mask_i[None, :], other=0.0)
        if ALIGNED:
            row_block = offs_o.to(tl.int64) * (n_in // 4) + i0 // 4
            block = (row_block[:, None] + tl.arange(0, BLOCK_IN // 4)[None, :]).to(tl.uint32)
            z0, z1, z2, z3 = block_normals(block, noise_id, step, stream, k0, k1)
            e = interleave4(z0, z1, z2, z3)
        else:
            e = element_normals(offs_o.to(tl.int64)[:, None] * n_in + offs_i[None, :], noise_id, step, stream, k0,
                                k1)
        # Out-of-range rows/columns get noise too, but their x (columns) is 0 and their outputs are masked.
        wp = (w.to(acc.dtype) + scale * e.to(acc.dtype)).to(w.dtype)
        acc = dot(x.to(w.dtype), tl.trans(wp), acc, EXACT_FP32)
    return acc


@triton.jit
def add_perturbed_bias(acc, b_ptr, offs_o, mask_o, scale, noise_id, step, stream, k0, k1):
    """``acc + (b + scale e)`` broadcast over rows; bias element o is stream element o."""
    b = tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(acc.dtype)
    e = element_normals(offs_o.to(tl.int64), noise_id, step, stream, k0, k1).to(acc.dtype)
    return acc + (b + scale * e)[None, :]


@triton.jit
def activate(y, ACTIVATION: tl.constexpr):
    """0 none, 1 tanh, 2 relu, 3 sigmoid (``ACTIVATION_CODES``)."""
    if ACTIVATION == 1:
        t = tl.exp(-2.0 * tl.abs(y))  # tanh |y| = (1 - t) / (1 + t), no overflow
        th = (1.0 - t) / (1.0 + t)
        return tl.where(y < 0, -th, th)
    elif ACTIVATION == 2:
        return tl.maximum(y, 0.0)
    elif ACTIVATION == 3:
        return 1.0 / (1.0 + tl.exp(-y))
    else:
        return y


@triton.jit
def tile_of(pid, n_rows, n_out, BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr):
    """Member, row offsets and output offsets of program ``pid`` in a flat (member, row tile, output tile) grid."""
    tiles_b = tl.cdiv(n_rows, BLOCK_B)
    tiles_o = tl.cdiv(n_out, BLOCK_O)
    m = pid // (tiles_b * tiles_o)
    rest = pid % (tiles_b * tiles_o)
    offs_b = (rest // tiles_o) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_o = (rest % tiles_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    return m, offs_b, offs_o


@triton.jit
def _full_rank_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_rows, n_in, n_out,
                      stride_xm, stride_xb, stride_xi, stride_wo, stride_wi, stride_ym, stride_yb, stride_yo,
                      sigma, k0, k1, step, w_stream, b_stream,
                      HAS_BIAS: tl.constexpr, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr,
                      ACTIVATION: tl.constexpr, ALIGNED: tl.constexpr, EXACT_FP32: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_IN: tl.constexpr):
    m, offs_b, offs_o = tile_of(tl.program_id(0), n_rows, n_out, BLOCK_B, BLOCK_O)
    mask_b = offs_b < n_rows
    mask_o = offs_o < n_out
    noise_id, sign = member_noise(m, BASELINE, ANTITHETIC)
    acc = compute_zeros((BLOCK_B, BLOCK_O), w_ptr)
    scale = sign.to(acc.dtype) * sigma
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    acc = perturbed_matmul(acc, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, w_ptr, stride_wo, stride_wi,
                           offs_b, mask_b, offs_o, mask_o, n_in, scale, noise_id, step32, as_u32(w_stream), key0,
                           key1, ALIGNED, BLOCK_IN, EXACT_FP32)
    if HAS_BIAS:
        acc = add_perturbed_bias(acc, b_ptr, offs_o, mask_o, scale, noise_id, step32, as_u32(b_stream), key0, key1)
    y = activate(acc, ACTIVATION)
    tl.store(y_ptr + m.to(tl.int64) * stride_ym + offs_b[:, None] * stride_yb + offs_o[None, :] * stride_yo,
             y.to(y_ptr.dtype.element_ty), mask=mask_b[:, None] & mask_o[None, :])


@triton.jit
def low_rank_project(acc, x_ptr, stride_xb, stride_xi, offs_b, mask_b, n_in, f_ptr, rank,
                     BLOCK_IN: tl.constexpr, EXACT_FP32: tl.constexpr):
    """``acc + x B`` [rows, RANK_TILE] with factor B [n_in, rank] row-major at ``f_ptr``."""
    q = tl.arange(0, acc.shape[1])
    for i0 in range(0, n_in, BLOCK_IN):
        offs_i = i0 + tl.arange(0, BLOCK_IN)
        mask_i = offs_i < n_in
        x = tl.load(x_ptr + offs_b[:, None] * stride_xb + offs_i[None, :] * stride_xi,
                    mask=mask_b[:, None] & mask_i[None, :], other=0.0)
        f = tl.load(f_ptr + offs_i[:, None] * rank + q[None, :], mask=mask_i[:, None] & (q < rank)[None, :], other=0.0)
        acc = dot(x.to(acc.dtype), f.to(acc.dtype), acc, EXACT_FP32)
    return acc


@triton.jit
def low_rank_expand(acc, t, offs_o, mask_o, a_ptr, rank, EXACT_FP32: tl.constexpr):
    """``acc + t A^T`` for output columns ``offs_o``, with factor A [n_out, rank] row-major at ``a_ptr``."""
    q = tl.arange(0, t.shape[1])
    a = tl.load(a_ptr + offs_o[:, None] * rank + q[None, :], mask=mask_o[:, None] & (q < rank)[None, :], other=0.0)
    return dot(t, tl.trans(a.to(t.dtype)), acc, EXACT_FP32)


@triton.jit
def _low_rank_kernel(base_ptr, x_ptr, f_ptr, b_ptr, y_ptr, n_rows, n_in, n_out, rank,
                     stride_basem, stride_baseb, stride_baseo, stride_xm, stride_xb, stride_xi, stride_f,
                     stride_ym, stride_yb, stride_yo, sigma, k0, k1, step, b_stream,
                     HAS_BIAS: tl.constexpr, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr,
                     ACTIVATION: tl.constexpr, EXACT_FP32: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_IN: tl.constexpr, RANK_TILE: tl.constexpr):
    # One program per (member, row tile): project the rows on B once, then sweep the output tiles.
    m, offs_b, _ = tile_of(tl.program_id(0), n_rows, 1, BLOCK_B, 1)
    mask_b = offs_b < n_rows
    noise_id, sign = member_noise(m, BASELINE, ANTITHETIC)
    t = compute_zeros((BLOCK_B, RANK_TILE), y_ptr)
    scale = sign.to(t.dtype) * sigma
    a_ptr = f_ptr + noise_id.to(tl.int64) * stride_f  # factors of this member's noise id: A, then B
    t = low_rank_project(t, x_ptr + m.to(tl.int64) * stride_xm, stride_xb, stride_xi, offs_b, mask_b, n_in,
                         a_ptr + n_out * rank, rank, BLOCK_IN, EXACT_FP32)
    t = t * (scale / tl.sqrt(tl.to_tensor(rank).to(t.dtype)))
    key0, key1, step32 = as_u32(k0), as_u32(k1), as_u32(step)
    for o0 in range(0, n_out, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        mask_o = offs_o < n_out
        mask = mask_b[:, None] & mask_o[None, :]
        acc = tl.load(base_ptr + m.to(tl.int64) * stride_basem + offs_b[:, None] * stride_baseb
                      + offs_o[None, :] * stride_baseo, mask=mask, other=0.0).to(t.dtype)
        acc = low_rank_expand(acc, t, offs_o, mask_o, a_ptr, rank, EXACT_FP32)
        if HAS_BIAS:
            acc = add_perturbed_bias(acc, b_ptr, offs_o, mask_o, scale, noise_id, step32, as_u32(b_stream), key0,
                                     key1)
        y = activate(acc, ACTIVATION)
        tl.store(y_ptr + m.to(tl.int64) * stride_ym + offs_b[:, None] * stride_yb + offs_o[None, :] * stride_yo,
                 y.to(y_ptr.dtype.element_ty), mask=mask)


def member_strides(t: torch.Tensor, dims: int):
    """Strides of ``t`` seen as [members, *rest] with ``dims`` trailing dims; a shared (unbatched) tensor has 0."""
    return ((0,) if t.dim() == dims else (t.stride(0),)) + tuple(t.stride()[-dims:])


def launch_full_rank(y, x, weight, bias, seed, step, weight_stream, bias_stream, sigma, baseline, antithetic,
                     activation: int):
    """Full-rank perturbed linear layer into ``y`` [K, B, out]; ``x`` is [K, B, in] or shared [B, in]."""
    num_members, n_rows, n_out = y.shape
    n_in = weight.shape[1]
    if y.numel() == 0:
        return
    block_b, block_o, block_in = tile_size(n_rows), tile_size(n_out), tile_size(n_in)
    grid = (num_members * triton.cdiv(n_rows, block_b) * triton.cdiv(n_out, block_o),)
    k0, k1, step32, w_stream = counter_words(seed, step, weight_stream)
    launch(_full_rank_kernel, grid, x, weight, bias if bias is not None else weight, y, n_rows, n_in, n_out,
           *member_strides(x, 2), *weight.stride(), *y.stride(), sigma, k0, k1, step32, w_stream, bias_stream,
           HAS_BIAS=bias is not None, BASELINE=int(baseline), ANTITHETIC=antithetic, ACTIVATION=activation,
           ALIGNED=n_in % 4 == 0, EXACT_FP32=exact_fp32(weight.dtype), BLOCK_B=block_b, BLOCK_O=block_o,
           BLOCK_IN=block_in)


def low_rank_factors(weight, seed, step, stream, rank, num_members, baseline, antithetic):
    """Every noise id's factors ``[A (out x r) | B (in x r)]``, one row per id, in the compute dtype.

    Generated once per call by the noise kernel (no Philox block is computed twice), so the correction kernels
    read them instead of regenerating them in every row tile; they take ids x (out + in) x r, never ids x P.
    """
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    ids = max(1, num_noise_ids(num_members, baseline, antithetic))  # the baseline alone still reads row 0
    factors = torch.empty(ids, low_rank_numel(weight.shape, rank), dtype=dtype, device=weight.device)
    fill_noise(factors, seed, step, stream, 0)
    return factors


def launch_low_rank(y, base, x, factors, bias, seed, step, bias_stream, sigma, rank, baseline, antithetic,
                    activation: int, n_in: int):
    """``y = act(base + s sigma (x B) A^T / sqrt(r) + perturbed bias)``; ``base``, ``x`` may be shared."""
    num_members, n_rows, n_out = y.shape
    if y.numel() == 0:
        return
    block_b = tile_size(n_rows)
    grid = (num_members * triton.cdiv(n_rows, block_b),)
    k0, k1, step32, _ = counter_words(seed, step, bias_stream)
    launch(_low_rank_kernel, grid, base, x, factors, bias if bias is not None else y, y, n_rows, n_in, n_out, rank,
           *member_strides(base, 2), *member_strides(x, 2), factors.stride(0), *y.stride(), sigma, k0, k1, step32,
           bias_stream, HAS_BIAS=bias is not None, BASELINE=int(baseline), ANTITHETIC=antithetic,
           ACTIVATION=activation, EXACT_FP32=exact_fp32(y.dtype), BLOCK_B=block_b, BLOCK_O=tile_size(n_out),
           BLOCK_IN=tile_size(n_in), RANK_TILE=tile_size(rank, cap=1 << 30))


@triton_library_op("perturbed_linear", mutates_args=())
def perturbed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seed: int, step: int,
                     weight_stream: int, bias_stream: int, sigma: float, num_members: int, rank: int, baseline: bool,
                     antithetic: bool, activation: str) -> torch.Tensor:
    x = x.to(weight.dtype)
    y = weight.new_empty(num_members, x.shape[-2], weight.shape[0])
    code = ACTIVATION_CODES[activation]
    if rank == 0:
        launch_full_rank(y, x, weight, bias, seed, step, weight_stream, bias_stream, sigma, baseline, antithetic,
                         code)
    else:
        factors = low_rank_factors(weight, seed, step, weight_stream, rank, num_members, baseline, antithetic)
        base = torch.matmul(x, weight.t())  # [B, out] once when x is shared: the plain-inference floor
        launch_low_rank(y, base, x, factors, bias, seed, step, bias_stream, sigma, rank, baseline, antithetic, code,
                        weight.shape[1])
    return y
