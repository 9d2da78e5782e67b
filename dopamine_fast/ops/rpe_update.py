"""Reference fused update: ``param += alpha * sum_j coeffs[j] * eps_j`` with the noise regenerated.

The optimizers turn the members' reward-prediction errors into one coefficient per noise id
(``dopamine_fast.optim.functional.rpe_coefficients``); this op applies them in one pass over the parameter.
Low rank: ``sum_j c_j A_j B_j^T / sqrt(r)`` is one matrix product of the stacked factors.
"""

from __future__ import annotations

import math

import torch

from .noise import low_rank_numel, noise_reference
from .perturbation import CHUNK_NORMALS


def rpe_update_reference(param: torch.Tensor, coeffs: torch.Tensor, seed: int, step: int, stream: int, rank: int,
                         alpha: float) -> None:
    shape = param.shape
    rank = rank if param.dim() >= 2 else 0
    numel = low_rank_numel(shape, rank)
    n_ids = coeffs.numel()
    dtype = param.dtype
    total = torch.zeros(param.numel(), dtype=dtype, device=param.device)
    chunk = max(1, CHUNK_NORMALS // max(1, numel))
    for j0 in range(0, n_ids, chunk):
        c = coeffs[j0:j0 + chunk].to(dtype)
        v = noise_reference(seed, step, stream, j0, c.numel(), numel, device=param.device, dtype=dtype)
        if rank:
            out = shape[0]
            a = v[:, : out * rank].reshape(-1, out, rank) * c[:, None, None]
            b = v[:, out * rank:].reshape(c.numel(), -1, rank)
            # [out, n*r] @ [n*r, in]: all members' factors in one GEMM.
            total += (a.permute(1, 0, 2).reshape(out, -1) @ b.permute(0, 2, 1).reshape(-1, b.shape[1])
                      ).reshape(-1) / math.sqrt(rank)
        else:
            total += c @ v
    param.add_(total.view(shape), alpha=alpha)
