"""Shared pieces of the reference ops: member chunks and perturbed matrix products.

A chunk of members regenerates the noise of its own noise ids only, so the references hold at most
``chunk x P`` normals, never ``K x P``.
"""

from __future__ import annotations

import math

import torch

from ..plan import member_noise_ids
from .noise import low_rank_numel, noise_reference

# Upper bound on the normals one chunk of members materialises in the references.
CHUNK_NORMALS = 1 << 22


def member_chunks(num_members: int, normals_per_member: int):
    """Consecutive ``(start, stop)`` ranges of members whose noise fits in ``CHUNK_NORMALS``."""
    size = max(1, CHUNK_NORMALS // max(1, normals_per_member))
    return [(m0, min(num_members, m0 + size)) for m0 in range(0, num_members, size)]


class ChunkNoise:
    """Noise of one parameter for the members ``[m0, m1)`` (member ids, not positions) of a batched evaluation.

    ``signs`` [m] scales each member's perturbation (0 for the unperturbed one); ``factors`` holds the
    low-rank ``(A, B)`` of each member, or ``full`` the full-rank perturbation, both already gathered per member.
    """

    def __init__(self, shape, dtype, seed, step, stream, rank, m0, m1, baseline, antithetic, device):
        ids, signs = member_noise_ids(m1 - m0, baseline, antithetic, device=device, first_member=m0)
        self.signs = signs.to(dtype)
        self.rank = rank if len(shape) >= 2 else 0
        first = int(ids.min()) if ids.numel() else 0
        count = int(ids.max()) - first + 1 if ids.numel() else 0
        v = noise_reference(seed, step, stream, first, count, low_rank_numel(shape, self.rank), device=device,
                            dtype=dtype)[ids - first]
        if self.rank:
            out = shape[0]
            self.a = v[:, : out * self.rank].reshape(len(ids), out, self.rank)
            self.b = v[:, out * self.rank:].reshape(len(ids), -1, self.rank) / math.sqrt(self.rank)
        else:
            self.full = v.reshape(len(ids), *shape)

    def matmul_t(self, x: torch.Tensor) -> torch.Tensor:
        """``x_k @ eps_k.T`` for each member k of the chunk, x of shape [m, rows, in]."""
        if self.rank:
            return torch.bmm(torch.bmm(x, self.b), self.a.transpose(1, 2))
        return torch.bmm(x, self.full.transpose(1, 2))

    def vector(self) -> torch.Tensor:
        """Each member's full perturbation of a one-dimensional parameter: [m, n]."""
        return self.full


def shared_matmul_t(x: torch.Tensor, weight: torch.Tensor, shared: bool) -> torch.Tensor:
    """``x_k @ W.T`` for each member k, x of shape [m, rows, in] (``shared``: the same rows for every member): one
    product per member, or one for all, so a member's rows come out the same whichever members share the call (a
    GEMM's rounding may depend on its row count)."""
    if shared:
        return torch.matmul(x[0], weight.t()).expand(x.shape[0], -1, -1)
    return torch.bmm(x, weight.t().expand(x.shape[0], -1, -1))


def apply_activation(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return y
    if activation == "tanh":
        return torch.tanh(y)
    if activation == "relu":
        return torch.relu(y)
    if activation == "sigmoid":
        return torch.sigmoid(y)
    raise ValueError(f"activation must be one of 'none', 'tanh', 'relu', 'sigmoid', got {activation!r}")
