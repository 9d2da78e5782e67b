"""The drop-in step at inference memory (``memory="lean"``): members evaluated in place, no copy, no noise tensor.

``memory="exact"`` (the default) evaluates each member as ``w + s sigma eps_j`` added to the weights and restores
them from one O(P) copy made before the first member, bit for bit; ``eps_j`` of every parameter is materialised
(another O(P)). ``memory="lean"`` keeps neither: the fused op ``perturb_`` adds ``s sigma eps_j`` to each
parameter in one pass, regenerating the noise inside the kernel, and takes it away again the same way. An
antithetic pair moves from ``+eps_j`` to ``-eps_j`` in one pass (``-2 sigma eps_j``). The update that follows
(``rpe_update_``) is in place in both modes. Extra memory: what one kernel call needs (nothing for a contiguous
float32 or float64 parameter; a float32 copy of one tensor at most otherwise) plus O(K).

The price is exactness: ``(w + a) - a`` is not ``w`` in floating point. After the members, and whenever the
closure raises (Ctrl-C included), each element is back within rounding: ``|w' - w| <= 2 * eps(dtype) *
(|w| + 2 |sigma eps_j|)`` (one rounding per pass, at most three passes per member pair: ``+eps``, ``-2 eps``,
``+eps``), where ``eps(dtype)`` is ``torch.finfo(dtype).eps``. The step is deterministic, so a run resumed from a
checkpoint continues bit for bit in either mode.

Two options still cost O(P) in either mode: ``max_grad_norm`` (the update is built in one buffer per parameter
to take its norm) and ``on_divergence="restore"`` (a copy of the best weights). So a lean optimizer's divergence
guard warns by default (``default_on_divergence``); pass ``on_divergence="restore"`` to keep that one copy.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from .. import ops
from ..plan import ParamNoise, PerturbationPlan, member_noise_ids
from .functional import start_losses

MEMORY_MODES = ("exact", "lean")

Offset = Optional[Tuple[int, float]]  # (noise id, sign) a parameter carries now; None: unperturbed


def default_on_divergence(memory: str) -> str:
    """The guard's mode when none is given: "restore" (a copy of the best weights), except in lean mode, which
    keeps no copy of the weights and so only warns."""
    return "warn" if memory == "lean" else "restore"


def check_memory(memory) -> None:
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES} ('lean': no weight copy, restored within "
                         f"rounding; 'exact': one O(P) copy, restored bit for bit), got {memory!r}")


def evaluate_lean(loss_of: Callable[[], torch.Tensor], plan: PerturbationPlan) -> torch.Tensor:
    """The losses of ``plan.local_members``, the weights moved in place from member to member.

    ``loss_of()`` evaluates the model as its weights are now. Whatever it raises, every parameter goes back to
    the unperturbed weights (within rounding) before the exception goes on.
    """
    members = plan.local_members
    losses, go_on = start_losses(loss_of, members)
    if not go_on:
        return losses
    ids, signs = member_noise_ids(plan.num_members, True, plan.antithetic)
    offsets: List[Offset] = [None] * len(plan.params)
    try:
        for m in members[1:] if 0 in members else members:
            target = (int(ids[m]), float(signs[m]))
            for i, pn in enumerate(plan.params):
                _move(plan, pn, offsets, i, target)
            losses[m - members.start] = loss_of()
    finally:
        for i, pn in enumerate(plan.params):
            _move(plan, pn, offsets, i, None)
    return losses


def _move(plan: PerturbationPlan, pn: ParamNoise, offsets: List[Offset], i: int, target: Offset) -> None:
    """Move parameter ``i`` from the member offset it carries (``offsets[i]``) to ``target``, in place.

    ``offsets[i]`` is updated after each kernel call, so an interruption between calls leaves it true.
    """
    current = offsets[i]
    if current == target:
        return
    if current is not None and target is not None and current[0] == target[0]:  # an antithetic flip: one pass
        _perturb(plan, pn, current[0], target[1] - current[1])
        offsets[i] = target
        return
    if current is not None:
        _perturb(plan, pn, current[0], -current[1])
        offsets[i] = None
    if target is not None:
        _perturb(plan, pn, target[0], target[1])
        offsets[i] = target


def _perturb(plan: PerturbationPlan, pn: ParamNoise, noise_id: int, sign: float) -> None:
    ops.perturb_(pn.param.data, plan.seed, plan.step, pn.stream, noise_id, pn.rank, sign * pn.sigma)


def restore_bound(weights: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
    """The documented bound on ``|w' - w|`` after a lean evaluation, ``2 eps(dtype) (|w| + 2 |sigma eps_j|)``, in
    float64 for the weights ``w`` (their dtype sets ``eps``) and the largest ``|sigma eps_j|`` they carried."""
    return 2 * torch.finfo(weights.dtype).eps * (weights.double().abs() + 2 * perturbation.double().abs())


__all__ = ["MEMORY_MODES", "check_memory", "evaluate_lean", "restore_bound"]
