"""Which noise each member of a batched evaluation carries (the "Members" section of docs/noise.md)."""

from __future__ import annotations

import torch


def num_noise_ids(num_members: int, baseline: bool, antithetic: bool) -> int:
    """How many distinct noise draws ``num_members`` members use."""
    perturbed = num_members - (1 if baseline else 0)
    if perturbed <= 0:
        return 0
    return (perturbed + 1) // 2 if antithetic else perturbed


def member_noise_ids(num_members: int, baseline: bool, antithetic: bool, device=None):
    """Noise id and sign of each member: ``(ids, signs)``, int64 and float32 tensors of length ``num_members``.

    The unperturbed member (member 0 when ``baseline``) has id 0 and sign 0, so ``w + sign * sigma * eps``
    is ``w`` for it whatever ``eps`` is.
    """
    m = torch.arange(num_members, device=device)
    p = m - (1 if baseline else 0)
    if antithetic:
        ids = torch.div(p, 2, rounding_mode="floor")
        signs = 1.0 - 2.0 * (p % 2).float()
    else:
        ids = p.clone()
        signs = torch.ones(num_members, device=device)
    signs = torch.where(p < 0, torch.zeros_like(signs), signs)
    ids = ids.clamp_min(0)
    return ids, signs
