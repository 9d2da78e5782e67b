"""Triton in-place perturbation ``param += alpha * eps_j`` of one noise id (``perturb_reference`` is the spec).

Full rank: one program per tile regenerates the tile's normals in registers and writes the parameter once. Low
rank: the ``r (out + in)`` normals of the factors are generated first (a small buffer), then one program per
[rows, columns] tile adds ``sum_q A[o, q] B[i, q]`` (r outer products in registers) to its tile of the parameter.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...plan import low_rank_numel
from .common import compute_zeros
from .noise import fill_noise
from .philox import as_u32, block_normals, counter_jit, counter_words, interleave4

BLOCK = 1024
TILE = 32  # low rank: rows and columns per program


@counter_jit
def _full_rank_kernel(p_ptr, numel, alpha, noise_id, k0, k1, step, stream, BLOCK: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    block = (tile * (BLOCK // 4) + tl.arange(0, BLOCK // 4)).to(tl.uint32)
    z0, z1, z2, z3 = block_normals(block, as_u32(noise_id), as_u32(step), as_u32(stream), as_u32(k0), as_u32(k1))
    acc = compute_zeros((BLOCK,), p_ptr)
    offs = tile * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = tl.load(p_ptr + offs, mask=mask)
    acc += p.to(acc.dtype) + alpha * interleave4(z0, z1, z2, z3).to(acc.dtype)
    tl.store(p_ptr + offs, acc.to(p.dtype), mask=mask)


@triton.jit
def _low_rank_kernel(p_ptr, f_ptr, n_out, n_in, rank, scale, TILE: tl.constexpr):
    """Tile (rows, cols) of ``p [out, in] += scale * A B^T`` with ``f = [A (out x r) | B (in x r)]`` row-major."""
    offs_o = tl.program_id(0) * TILE + tl.arange(0, TILE)
    offs_i = tl.program_id(1) * TILE + tl.arange(0, TILE)
    mask_o, mask_i = offs_o < n_out, offs_i < n_in
    mask = mask_o[:, None] & mask_i[None, :]
    ptrs = p_ptr + offs_o.to(tl.int64)[:, None] * n_in + offs_i[None, :]
    p = tl.load(ptrs, mask=mask)
    acc = compute_zeros((TILE, TILE), p_ptr)
    for q in range(0, rank):
        a = tl.load(f_ptr + offs_o * rank + q, mask=mask_o, other=0.0).to(acc.dtype)
        b = tl.load(f_ptr + n_out * rank + offs_i * rank + q, mask=mask_i, other=0.0).to(acc.dtype)
        acc += a[:, None] * b[None, :]
    tl.store(ptrs, (p.to(acc.dtype) + scale * acc).to(p.dtype), mask=mask)


def perturb_(param: torch.Tensor, seed: int, step: int, stream: int, noise_id: int, rank: int, alpha: float) -> None:
    if param.numel() == 0:
        return
    # The kernels index the parameter's elements in row-major order: work on a contiguous copy if it is a view.
    work = param if param.is_contiguous() else param.contiguous()
    words = counter_words(seed, step, stream)
    if rank and param.dim() >= 2:
        out = param.shape[0]
        fan_in = param.numel() // out
        factors = torch.empty(1, low_rank_numel(param.shape, rank), dtype=torch.float32, device=param.device)
        fill_noise(factors, seed, step, stream, noise_id)
        grid = (triton.cdiv(out, TILE), triton.cdiv(fan_in, TILE))
        _low_rank_kernel[grid](work, factors, out, fan_in, rank, alpha / math.sqrt(rank), TILE=TILE)
    else:
        grid = (triton.cdiv(param.numel(), BLOCK),)
        _full_rank_kernel[grid](work, param.numel(), alpha, noise_id, *words, BLOCK=BLOCK)
    if work is not param:
        param.copy_(work)
