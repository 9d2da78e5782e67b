"""Reference perturbed Elman RNN: ``h_t = act(x_t W_ih,k^T + b_ih,k + h_{t-1} W_hh,k^T + b_hh,k)`` for the members
``k = first_member .. first_member + num_members - 1``.

Every weight and bias of member k is ``w + s_k sigma eps_k`` with its own stream; inputs are batch-first.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .noise import low_rank_numel
from .perturbation import ChunkNoise, apply_activation, member_chunks, shared_matmul_t


def perturbed_rnn_reference(x: torch.Tensor, h0: Optional[torch.Tensor], weight_ih: torch.Tensor,
                            weight_hh: torch.Tensor, bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor],
                            seed: int, step: int, streams: List[int], sigma: float, num_members: int, rank: int,
                            baseline: bool, antithetic: bool, nonlinearity: str,
                            return_sequence: bool, first_member: int = 0) -> torch.Tensor:
    hidden = weight_hh.shape[0]
    dtype = weight_hh.dtype
    xs = x if x.dim() == 4 else x.expand(num_members, *x.shape)
    batch, steps = xs.shape[1], xs.shape[2]
    shape = (num_members, batch, steps, hidden) if return_sequence else (num_members, batch, hidden)
    out = torch.empty(shape, dtype=dtype, device=weight_hh.device)
    common = dict(seed=seed, step=step, rank=rank, baseline=baseline, antithetic=antithetic, device=weight_hh.device)
    per_member = low_rank_numel(weight_ih.shape, rank) + low_rank_numel(weight_hh.shape, rank)
    for m0, m1 in member_chunks(num_members, per_member):
        ids = dict(m0=first_member + m0, m1=first_member + m1)
        n_ih = ChunkNoise(weight_ih.shape, dtype, stream=streams[0], **ids, **common)
        n_hh = ChunkNoise(weight_hh.shape, dtype, stream=streams[1], **ids, **common)
        s_ih = (sigma * n_ih.signs)[:, None, None]
        s_hh = (sigma * n_hh.signs)[:, None, None]
        bias = torch.zeros(m1 - m0, 1, hidden, dtype=dtype, device=weight_hh.device)
        for b, stream in ((bias_ih, streams[2]), (bias_hh, streams[3])):
            if b is not None:
                nb = ChunkNoise(b.shape, dtype, stream=stream, **ids, **common)
                bias = bias + (b + (sigma * nb.signs)[:, None] * nb.vector())[:, None, :]
        xc = xs[m0:m1].to(dtype)
        if h0 is None:
            h = torch.zeros(m1 - m0, batch, hidden, dtype=dtype, device=weight_hh.device)
        else:
            h = (h0 if h0.dim() == 3 else h0.expand(num_members, *h0.shape))[m0:m1].to(dtype)
        for t in range(steps):
            xt = xc[:, :, t]
            pre = (shared_matmul_t(xt, weight_ih, x.dim() == 3) + s_ih * n_ih.matmul_t(xt)
                   + shared_matmul_t(h, weight_hh, t == 0 and (h0 is None or h0.dim() == 2))
                   + s_hh * n_hh.matmul_t(h) + bias)
            h = apply_activation(pre, nonlinearity)
            if return_sequence:
                out[m0:m1, :, t] = h
        if not return_sequence:
            out[m0:m1] = h
    return out
