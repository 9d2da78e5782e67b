"""Reference in-place perturbation: ``param += alpha * eps_j`` for one noise id ``j`` of one parameter's stream.

The drop-in step's lean mode (``memory="lean"``) moves the weights from member to member with this op: perturb
(``alpha = sign * sigma``), flip an antithetic pair (``-2 sigma``) and restore (``-sign * sigma``), regenerating
``eps_j`` each time instead of storing it or a copy of the weights. The noise is float32 (docs/noise.md); the sum is
formed in float32 (float64 for float64 parameters) and rounded once to the parameter's dtype. Low rank
(``rank=r`` >= 1, parameters of two or more dimensions): ``eps_j = A_j B_j^T / sqrt(r)`` from ``r (out + in)``
normals, a thin matrix product.
"""

from __future__ import annotations

import math

import torch

from .noise import low_rank_numel, noise_reference


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 parameters, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def perturb_reference(param: torch.Tensor, seed: int, step: int, stream: int, noise_id: int, rank: int,
                      alpha: float) -> None:
    shape = param.shape
    rank = rank if param.dim() >= 2 else 0
    dtype = compute_dtype(param.dtype)
    v = noise_reference(seed, step, stream, noise_id, 1, low_rank_numel(shape, rank), device=param.device)[0]
    v = v.to(dtype)
    if rank:
        out = shape[0]
        a = v[: out * rank].view(out, rank)
        b = v[out * rank:].view(-1, rank)
        eps = (a @ b.T).view(shape)
        alpha = alpha / math.sqrt(rank)
    else:
        eps = v.view(shape)
    param.copy_(param.to(dtype).add_(eps, alpha=alpha))
