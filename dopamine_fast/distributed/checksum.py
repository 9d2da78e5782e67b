"""Parameter checksums for the drift guard: an exact integer hash of the bits, and a float64 sum for people."""

from __future__ import annotations

from typing import Iterable

import torch

BITS_DTYPES = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}
# Position weights make the hash see swapped elements. Products and sums wrap modulo 2**64, a ring, so the hash
# does not depend on the order of the reduction (threads, devices), unlike a float sum.
POSITION_PERIOD = 8191


def bit_hash(tensors: Iterable[torch.Tensor]) -> int:
    """An int64 hash of the exact bits of ``tensors``; integer sums do not depend on the reduction order."""
    total = torch.zeros((), dtype=torch.int64)
    for i, t in enumerate(tensors):
        flat = t.detach().contiguous().reshape(-1)
        bits = flat.view(BITS_DTYPES[flat.element_size()]).to(torch.int64)
        if flat.element_size() < 8:
            bits = bits & ((1 << (8 * flat.element_size())) - 1)  # as unsigned: no sign extension
        weights = torch.arange(bits.numel(), device=bits.device) % POSITION_PERIOD + 1 + i
        total = total * 1000003 + (bits * weights).sum().cpu()
    return int(total)


def float_sum(tensors: Iterable[torch.Tensor]) -> float:
    """The float64 sum of every element (shown in the drift message; not used to decide)."""
    return float(sum(float(t.detach().double().sum()) for t in tensors))
