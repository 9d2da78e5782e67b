"""Triton fused update ``param += alpha * sum_j coeffs[j] * eps_j`` (``rpe_update_reference`` is the spec).

Full rank: one program per tile of the parameter loops over the noise ids, accumulating ``c_j eps_j`` in
registers from the regenerated noise, and writes the parameter once. Low rank: the factors of a chunk of ids are
generated into a buffer and ``sum_j c_j A_j B_j^T`` is one GEMM of the stacked factors (``addmm_``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...plan import low_rank_numel
from .noise import fill_noise
from .philox import as_u32, block_normals, counter_jit, counter_words, interleave4
from .common import compute_dtype, compute_zeros

BLOCK = 1024
FACTOR_CHUNK_NORMALS = 1 << 24  # factors generated at once by the low-rank update (64 MiB in float32)


@counter_jit
def _full_rank_kernel(p_ptr, c_ptr, numel, n_ids, stride_c, alpha, k0, k1, step, stream, BLOCK: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    block = (tile * (BLOCK // 4) + tl.arange(0, BLOCK // 4)).to(tl.uint32)
    key0, key1, step32, stream32 = as_u32(k0), as_u32(k1), as_u32(step), as_u32(stream)
    acc = compute_zeros((BLOCK,), p_ptr)
    for j in range(0, n_ids):
        z0, z1, z2, z3 = block_normals(block, as_u32(j), step32, stream32, key0, key1)
        c = tl.load(c_ptr + j * stride_c).to(acc.dtype)
        acc += c * interleave4(z0, z1, z2, z3).to(acc.dtype)
    offs = tile * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = tl.load(p_ptr + offs, mask=mask)
    tl.store(p_ptr + offs, (p.to(acc.dtype) + alpha * acc).to(p.dtype), mask=mask)


def _full_rank(param, coeffs, seed, step, stream, alpha):
    grid = (triton.cdiv(param.numel(), BLOCK),)
    _full_rank_kernel[grid](param, coeffs, param.numel(), coeffs.numel(), coeffs.stride(0), alpha,
                            *counter_words(seed, step, stream), BLOCK=BLOCK)


def _low_rank(param, coeffs, seed, step, stream, rank, alpha):
    out = param.shape[0]
    matrix = param.view(out, -1)
    fan_in = matrix.shape[1]
    dtype = compute_dtype(param.dtype)
    numel = low_rank_numel(param.shape, rank)
    chunk = max(1, FACTOR_CHUNK_NORMALS // numel)
    update = matrix if matrix.dtype == dtype else torch.zeros(matrix.shape, dtype=dtype, device=param.device)
    for j0 in range(0, coeffs.numel(), chunk):
        c = coeffs[j0:j0 + chunk].to(dtype)
        v = torch.empty(c.numel(), numel, dtype=dtype, device=param.device)
        fill_noise(v, seed, step, stream, j0)
        a = (v[:, :out * rank].view(-1, out, rank) * c[:, None, None]).permute(1, 0, 2).reshape(out, -1)
        b = v[:, out * rank:].view(-1, fan_in, rank).permute(0, 2, 1).reshape(-1, fan_in)
        update.addmm_(a, b, alpha=alpha / math.sqrt(rank))  # [out, n*r] @ [n*r, in]: every id in one GEMM
    if update is not matrix:
        matrix.add_(update.to(matrix.dtype))


def rpe_update_(param: torch.Tensor, coeffs: torch.Tensor, seed: int, step: int, stream: int, rank: int,
                alpha: float) -> None:
    if param.numel() == 0 or coeffs.numel() == 0:
        return
    # The kernels index the parameter's elements in row-major order: work on a contiguous copy if it is a view.
    work = param if param.is_contiguous() else param.contiguous()
    if rank and param.dim() >= 2:
        _low_rank(work, coeffs, seed, step, stream, rank, alpha)
    else:
        _full_rank(work, coeffs, seed, step, stream, alpha)
    if work is not param:
        param.copy_(work)
