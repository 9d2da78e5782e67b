"""Pieces shared by the Triton kernels of the perturbed layers and the update (one file per op).

Host side: tile sizes, the compute dtype, member strides, the low-rank factors. Jit side: the perturbed matmul of
one (row tile, output tile) with its noise regenerated in registers, the low-rank projections, and the epilogue
every perturbed layer ends with (perturbed biases, activation, store). Philox and the member noise ids live in
``philox``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...activations import ACTIVATIONS
from ...plan import low_rank_numel
from .noise import fill_noise
from .philox import as_u32, block_normals, element_normals, interleave4, member_noise

# The kernels' activation codes, as the C++ Activation enum numbers them: 0 none, 1 tanh, 2 relu, 3 sigmoid.
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
MIN_TILE = 16  # tl.dot needs every tile dimension >= 16
MAX_TILE = 64


def tile_size(n: int, cap: int = MAX_TILE) -> int:
    return max(MIN_TILE, min(cap, triton.next_power_of_2(max(1, n))))


def exact_fp32(dtype: torch.dtype) -> bool:
    """Whether tl.dot must keep fp32 accuracy (tf32x3 on tensor cores) rather than use the inputs' own precision."""
    return dtype == torch.float32


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 for fp64, fp32 for every other float dtype (as ``compute_zeros`` in the kernels)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def member_strides(t: torch.Tensor, dims: int):
    """Strides of ``t`` seen as [members, *rest] with ``dims`` trailing dims; a shared (unbatched) tensor has 0."""
    return ((0,) if t.dim() == dims else (t.stride(0),)) + tuple(t.stride()[-dims:])


def first_noise_id(first_member: int, baseline: bool, antithetic: bool) -> int:
    """The noise id of member ``first_member`` (0 for the baseline), the first id a range of members reads."""
    p = max(0, first_member - int(baseline))
    return p // 2 if antithetic else p


def low_rank_factors(weight, seed, step, stream, rank, num_members, baseline, antithetic, first_member):
    """The factors ``[A (out x r) | B (in x r)]`` of every noise id the members ``first_member ..
    first_member + num_members - 1`` use, one row per id from ``first_noise_id``, in the compute dtype.

    Generated once per call by the noise kernel (no Philox block is computed twice), so the correction kernels
    read them instead of regenerating them in every row tile; they take ids x (out + in) x r, never ids x P.
    """
    first = first_noise_id(first_member, baseline, antithetic)
    last = first_noise_id(first_member + num_members - 1, baseline, antithetic)
    factors = torch.empty(last - first + 1, low_rank_numel(weight.shape, rank), dtype=compute_dtype(weight.dtype),
                          device=weight.device)
    fill_noise(factors, seed, step, stream, first)
    return factors


@triton.jit
def dot(a, b, acc, EXACT_FP32: tl.constexpr):
    """``acc + a @ b``: fp64 stays IEEE, fp32 uses three TF32 products (about fp32 accuracy, on tensor cores)."""
    if a.dtype == tl.float64:
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=tl.float64)  # Triton < 3.8 defaults to fp32
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
def load_rows(ptr, stride_b, stride_i, offs_b, mask_b, offs_i, mask_i):
    """The [rows, cols] tile ``ptr[b * stride_b + i * stride_i]``, zero outside the masks."""
    return tl.load(ptr + offs_b[:, None] * stride_b + offs_i[None, :] * stride_i,
                   mask=mask_b[:, None] & mask_i[None, :], other=0.0)


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
        x = load_rows(x_ptr, stride_xb, stride_xi, offs_b, mask_b, offs_i, mask_i)
        w = load_rows(w_ptr, stride_wo, stride_wi, offs_o, mask_o, offs_i, mask_i)
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
def low_rank_project(acc, x_ptr, stride_xb, stride_xi, offs_b, mask_b, n_in, f_ptr, rank,
                     BLOCK_IN: tl.constexpr, EXACT_FP32: tl.constexpr):
    """``acc + x B`` [rows, RANK_TILE] with factor B [n_in, rank] row-major at ``f_ptr``."""
    q = tl.arange(0, acc.shape[1])
    for i0 in range(0, n_in, BLOCK_IN):
        offs_i = i0 + tl.arange(0, BLOCK_IN)
        mask_i = offs_i < n_in
        x = load_rows(x_ptr, stride_xb, stride_xi, offs_b, mask_b, offs_i, mask_i)
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
def member_tile(pid, first_member, n_rows, n_out, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr,
                BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr):
    """Program ``pid`` of a flat (member, row tile, output tile) grid: member ``m`` (its position in the call, whose
    first member is ``first_member``), row and output offsets with their masks, and the member's noise id and
    sign."""
    tiles_b = tl.cdiv(n_rows, BLOCK_B)
    tiles_o = tl.cdiv(n_out, BLOCK_O)
    m = pid // (tiles_b * tiles_o)
    rest = pid % (tiles_b * tiles_o)
    offs_b = (rest // tiles_o) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_o = (rest % tiles_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    noise_id, sign = member_noise(first_member + m, BASELINE, ANTITHETIC)
    return m, offs_b, offs_b < n_rows, offs_o, offs_o < n_out, noise_id, sign


@triton.jit
def epilogue(acc, y_ptr, stride_yb, stride_yo, offs_b, mask_b, offs_o, mask_o, scale, noise_id, step, k0, k1,
             b0_ptr, b0_stream, b1_ptr, b1_stream,
             HAS_B0: tl.constexpr, HAS_B1: tl.constexpr, ACTIVATION: tl.constexpr):
    """Store ``act(acc + b0 + scale e0 + b1 + scale e1)`` (each bias when present, with its own noise stream) into
    the [rows, outputs] tile of ``y_ptr``, which points at the member's output."""
    if HAS_B0:
        acc = add_perturbed_bias(acc, b0_ptr, offs_o, mask_o, scale, noise_id, step, as_u32(b0_stream), k0, k1)
    if HAS_B1:
        acc = add_perturbed_bias(acc, b1_ptr, offs_o, mask_o, scale, noise_id, step, as_u32(b1_stream), k0, k1)
    y = activate(acc, ACTIVATION)
    tl.store(y_ptr + offs_b[:, None] * stride_yb + offs_o[None, :] * stride_yo, y.to(y_ptr.dtype.element_ty),
             mask=mask_b[:, None] & mask_o[None, :])


@triton.jit
def low_rank_outputs(base_ptr, stride_baseb, stride_baseo, y_ptr, stride_yb, stride_yo, offs_b, mask_b, n_out, rank,
                     t0, a0_ptr, t1, a1_ptr, scale, noise_id, step, k0, k1, b0_ptr, b0_stream, b1_ptr, b1_stream,
                     HAS_T1: tl.constexpr, HAS_B0: tl.constexpr, HAS_B1: tl.constexpr, ACTIVATION: tl.constexpr,
                     EXACT_FP32: tl.constexpr, BLOCK_O: tl.constexpr):
    """The output tiles of a low-rank perturbed layer's rows: ``act(base + t0 A0^T (+ t1 A1^T) + perturbed biases)``,
    with the projections ``t`` of the rows already scaled and ``base``, ``y`` pointing at the member's rows."""
    for o0 in range(0, n_out, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        mask_o = offs_o < n_out
        acc = load_rows(base_ptr, stride_baseb, stride_baseo, offs_b, mask_b, offs_o, mask_o).to(t0.dtype)
        acc = low_rank_expand(acc, t0, offs_o, mask_o, a0_ptr, rank, EXACT_FP32)
        if HAS_T1:
            acc = low_rank_expand(acc, t1, offs_o, mask_o, a1_ptr, rank, EXACT_FP32)
        epilogue(acc, y_ptr, stride_yb, stride_yo, offs_b, mask_b, offs_o, mask_o, scale, noise_id, step, k0, k1,
                 b0_ptr, b0_stream, b1_ptr, b1_stream, HAS_B0, HAS_B1, ACTIVATION)
