"""The contract between the perturbation optimizers and whoever evaluates their members.

A step of a perturbation optimizer evaluates ``M = 1 + K`` *members*: the model and ``K`` perturbed copies
of it, then updates the weights from their losses. A :class:`PerturbationPlan` is everything needed to
reproduce those members anywhere: the counter-based noise key (``seed``, ``step``), the number of members,
whether they come in antithetic pairs, and for each trained parameter its noise stream, scale ``sigma`` and
rank (:class:`ParamNoise`). The noise itself is never stored; it is regenerated from the key
(docs/noise.md).

- **Who builds it:** the optimizer, once per step (``PerturbationOptimizer.plan()``), from its seed, its
  step count and its parameter groups.
- **Who reads it:** the batched evaluator ``dopamine_fast.Population`` (``pop(plan, x, y)`` returns the
  member losses), the distributed sharding (``dopamine_fast.distributed`` narrows ``members`` to a rank's
  share), and the drop-in closure path of ``optimizer.step(closure)``, which perturbs the weights in place
  member by member. The losses go back to the optimizer with the plan they came from:
  ``optimizer.step_from_losses(losses, plan)``.

The member numbering (member 0 unperturbed, antithetic pairs) is defined here, once: :func:`member_noise_ids`
(and :func:`num_noise_ids`, the number of distinct noise draws). Each kernel language carries its own copy,
checked against this one through the ops' outputs by ``tests/test_member_numbering.py``: C++ ``member_noise``
and ``num_noise_ids`` (``csrc/ops.h``, for the CPU kernels and CUDA's low-rank path), the full-rank CUDA kernel's
``slot_of`` (``csrc/cuda/perturbed_matmul.cu``, the inverse map) and Triton's ``member_noise``.

This module imports only torch and the standard library: ``dopamine_fast.ops``, ``dopamine_fast.optim`` and the
Triton kernels (``dopamine_fast.backends.triton``) import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass(frozen=True)
class ParamNoise:
    """How one parameter is perturbed: its noise stream, scale and rank."""

    param: torch.Tensor
    stream: int
    sigma: float
    rank: int


@dataclass(frozen=True)
class PerturbationPlan:
    """Everything a batched evaluator needs to reproduce a step's members (docs/noise.md)."""

    seed: int
    step: int
    num_members: int  # 1 + K: member 0 is the unperturbed model
    antithetic: bool
    params: Tuple[ParamNoise, ...]
    members: Optional[range] = None  # the members this process evaluates (dopamine_fast.distributed); None: all

    @property
    def local_members(self) -> range:
        """The members an evaluator of this plan computes losses for, in order."""
        return range(self.num_members) if self.members is None else self.members


def low_rank_numel(shape, rank: int) -> int:
    """Number of normals the low-rank factors of a parameter of ``shape`` take (full rank: its numel)."""
    if rank == 0 or len(shape) < 2:
        return math.prod(shape)
    out = shape[0]
    return (out + math.prod(shape[1:])) * rank


def num_noise_ids(num_members: int, baseline: bool, antithetic: bool) -> int:
    """How many distinct noise draws ``num_members`` members use."""
    perturbed = num_members - (1 if baseline else 0)
    if perturbed <= 0:
        return 0
    return (perturbed + 1) // 2 if antithetic else perturbed


def member_noise_ids(num_members: int, baseline: bool, antithetic: bool, device=None, first_member: int = 0):
    """Noise id and sign of each member: ``(ids, signs)``, int64 and float32 tensors of length ``num_members``,
    for members ``first_member .. first_member + num_members - 1``.

    Member 0 is the unperturbed model when ``baseline``. With ``p = m - 1`` (or ``p = m`` without a baseline),
    member ``m`` carries noise id ``j = p`` and sign ``+1``, or with antithetic pairs noise id ``j = p // 2`` and
    sign ``+1`` for even ``p``, ``-1`` for odd ``p``; its parameters are ``w + sign * sigma * eps_j``. The
    unperturbed member has id 0 and sign 0, so that is ``w`` for it whatever ``eps`` is.
    """
    m = torch.arange(first_member, first_member + num_members, device=device)
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


__all__ = ["ParamNoise", "PerturbationPlan", "low_rank_numel", "member_noise_ids", "num_noise_ids"]
