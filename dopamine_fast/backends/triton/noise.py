"""Triton noise generator: normals or raw words of a stream, one program per tile of element blocks of one id."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .philox import as_u32, block_bits, box_muller, counter_jit, counter_words, interleave4

BLOCK = 1024  # elements per program: 256 Philox calls, each feeding four consecutive elements


@counter_jit
def _noise_kernel(out_ptr, numel, stride_id, stride_e, first_id, k0, k1, step, stream,
                  BITS: tl.constexpr, BLOCK: tl.constexpr):
    # One flat grid (ids x tiles): grid axes 1 and 2 are capped at 65535, and K can exceed that.
    pid = tl.program_id(0)
    tiles = tl.cdiv(numel, BLOCK)
    j = pid // tiles
    tile = (pid % tiles).to(tl.int64)
    block = (tile * (BLOCK // 4) + tl.arange(0, BLOCK // 4)).to(tl.uint32)
    noise_id = (first_id + j).to(tl.uint32)
    x0, x1, x2, x3 = block_bits(block, noise_id, as_u32(step), as_u32(stream), as_u32(k0), as_u32(k1))
    if BITS:
        value = interleave4(x0, x1, x2, x3).to(tl.int64)  # zero-extends the uint32 words
    else:
        z0, z1 = box_muller(x0, x1)
        z2, z3 = box_muller(x2, x3)
        value = interleave4(z0, z1, z2, z3).to(out_ptr.dtype.element_ty)
    offs = tile * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + j.to(tl.int64) * stride_id + offs * stride_e, value, mask=offs < numel)


def fill_noise(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int, bits: bool = False) -> None:
    """Write noise ids ``first_id ..`` (rows of ``out`` [ids, numel], any strides) of one stream into ``out``."""
    num_ids, numel = out.shape
    if num_ids == 0 or numel == 0:
        return
    grid = (num_ids * triton.cdiv(numel, BLOCK),)
    _noise_kernel[grid](out, numel, out.stride(0), out.stride(1), first_id, *counter_words(seed, step, stream),
                        BITS=bits, BLOCK=BLOCK)


def noise_(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    fill_noise(out, seed, step, stream, first_id)


def noise_bits_(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    fill_noise(out, seed, step, stream, first_id, bits=True)
