"""Reference perturbed linear layer: ``y_k = act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k)`` for the members
``k = first_member .. first_member + num_members - 1``."""

from __future__ import annotations

from typing import Optional

import torch

from .noise import low_rank_numel
from .perturbation import ChunkNoise, apply_activation, member_chunks, shared_matmul_t


def perturbed_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seed: int,
                               step: int, weight_stream: int, bias_stream: int, sigma: float, num_members: int,
                               rank: int, baseline: bool, antithetic: bool, activation: str,
                               first_member: int = 0) -> torch.Tensor:
    out_features = weight.shape[0]
    xs = x if x.dim() == 3 else x.expand(num_members, *x.shape)
    y = torch.empty(num_members, xs.shape[1], out_features, dtype=weight.dtype, device=weight.device)
    common = dict(seed=seed, step=step, rank=rank, baseline=baseline, antithetic=antithetic, device=weight.device)
    for m0, m1 in member_chunks(num_members, low_rank_numel(weight.shape, rank)):
        xc = xs[m0:m1].to(weight.dtype)
        ids = dict(m0=first_member + m0, m1=first_member + m1)
        nw = ChunkNoise(weight.shape, weight.dtype, stream=weight_stream, **ids, **common)
        yc = shared_matmul_t(xc, weight, x.dim() == 2) + (sigma * nw.signs)[:, None, None] * nw.matmul_t(xc)
        if bias is not None:
            nb = ChunkNoise(bias.shape, bias.dtype, stream=bias_stream, **ids, **common)
            yc = yc + (bias + (sigma * nb.signs)[:, None] * nb.vector())[:, None, :]
        y[m0:m1] = apply_activation(yc, activation)
    return y
