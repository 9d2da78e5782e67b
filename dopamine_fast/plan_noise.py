"""A plan's noise made into tensors: the perturbations of one parameter for a run of noise ids.

Beside ``plan.py`` (which only describes the members, and which the ops import) for the evaluators that need the
noise itself: the drop-in closure step and the generic batched path of ``Population``.
"""

from __future__ import annotations

import torch

from . import ops
from .plan import ParamNoise, PerturbationPlan


def member_perturbations(pn: ParamNoise, plan: PerturbationPlan, first_id: int, count: int) -> torch.Tensor:
    """``eps`` of one parameter for noise ids ``first_id .. first_id+count-1``: [count, *param.shape]."""
    p = pn.param
    rank = pn.rank if p.dim() >= 2 else 0
    v = ops.noise(plan.seed, plan.step, pn.stream, first_id, count, ops.low_rank_numel(p.shape, rank),
                  device=p.device, dtype=p.dtype)
    return ops.expand_noise(v, p.shape, rank)


__all__ = ["member_perturbations"]
