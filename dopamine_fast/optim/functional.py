"""Functional core of the perturbation optimizers: reward-prediction errors, learning rates, the update.

Everything here works on the ``M = 1 + K`` member losses of one step (member 0 unperturbed, docs/noise.md) and
holds no state; the optimizer classes keep the state and call these functions.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, List, Optional, Tuple

import torch

from .. import ops
from ..plan import ParamNoise, PerturbationPlan


def reward_prediction_errors(losses: torch.Tensor, antithetic: bool) -> torch.Tensor:
    """One RPE per noise id from the member losses ``[L(w), L(w + s_1 sigma eps), ...]``.

    Plain members: ``delta_j = L(w + sigma eps_j) - L(w)``. Antithetic pairs:
    ``delta_j = (L(w + sigma eps_j) - L(w - sigma eps_j)) / 2``.
    """
    if antithetic:
        return (losses[1::2] - losses[2::2]) / 2
    return losses[1:] - losses[0]


def wp_coefficients(delta: torch.Tensor, sigma: float) -> torch.Tensor:
    """Coefficients ``c_j`` of ``g = sum_j c_j eps_j = (1/n) sum_j delta_j eps_j / sigma`` (the WP estimate)."""
    return delta / (delta.numel() * sigma)


# |eps| of a full-rank draw is at most sqrt(-2 ln 2**-24) = 5.77 (Box-Muller of 24-bit uniforms, docs/noise.md);
# a rank-r draw A B^T / sqrt(r) at most r 5.77**2 / sqrt(r).
NOISE_MAX = 5.8
# Updates bounded below this fraction of the dtype's largest number are not checked against the weights' size:
# only weights already within it of the largest number could overflow (it spares a pass over every tensor).
_SMALL_UPDATE = 2.0**-20


class NonFiniteUpdate(ArithmeticError):
    """An update could leave a weight non-finite; nothing was written (the optimizer skips the step)."""


_STAGED: ContextVar[Optional[List[Callable[[], None]]]] = ContextVar("staged_updates", default=None)


@contextmanager
def staged_updates():
    """Inside, ``apply_noise_combination`` checks its update and stages the writes; they all run when the block
    ends without error, so an update refused for one group (``NonFiniteUpdate``) leaves every group unwritten."""
    writes: List[Callable[[], None]] = []
    token = _STAGED.set(writes)
    try:
        yield
    finally:
        _STAGED.reset(token)
    for write in writes:
        write()


def _write(action: Callable[[], None]) -> None:
    staged = _STAGED.get()
    if staged is None:
        action()
    else:
        staged.append(action)


def _noise_max(pn: ParamNoise) -> float:
    rank = pn.rank if pn.param.dim() >= 2 else 0
    return NOISE_MAX if rank == 0 else NOISE_MAX**2 * math.sqrt(rank)


def check_update_finite(params: Tuple[torch.Tensor, ...], bounds: List[float], alphas: List[float]) -> None:
    """Raise ``NonFiniteUpdate`` unless ``p + alpha * u`` stays finite for each parameter, where ``|u| <= bound``
    elementwise (``bound`` must itself be representable in the parameter's dtype)."""
    for p, bound, alpha in zip(params, bounds, alphas):
        limit = torch.finfo(p.dtype).max
        step = abs(alpha) * bound
        if not (bound <= limit and step <= limit):
            raise NonFiniteUpdate(f"the update of a {p.dtype} tensor of shape {tuple(p.shape)} may reach "
                                  f"{step:.3g}, beyond the dtype's largest number {limit:.3g}")
        if step > limit * _SMALL_UPDATE and float(p.detach().abs().max()) + step > limit:
            raise NonFiniteUpdate(f"the update of a {p.dtype} tensor of shape {tuple(p.shape)} may reach "
                                  f"{step:.3g}, which would carry its weights past the dtype's largest number "
                                  f"{limit:.3g}")


def apply_noise_combination(plan: PerturbationPlan, params: Tuple[ParamNoise, ...], coeffs: torch.Tensor,
                            alpha: float, max_norm: Optional[float] = None,
                            scales: Optional[Tuple[float, ...]] = None) -> None:
    """``p += alpha * scale_p * u_p`` with ``u_p = sum_j c_j eps_{p,j}`` for each of ``params``, the noise regenerated.

    ``scales`` (one per parameter, default 1) sizes each parameter's step. Without ``max_norm`` the fused op adds
    straight into the parameters. With it, ``u`` is first built in one O(P) buffer per parameter and scaled by
    ``min(1, max_norm / ||u||)`` (the norm over all ``params``), as ``torch.nn.utils.clip_grad_norm_`` does for
    back-propagated gradients.

    Before anything is written the update is bounded (``|u| <= sum_j |c_j| max|eps|``, or ``max|u|`` of the
    buffers): one that could leave a weight non-finite raises ``NonFiniteUpdate`` with no weight changed. Inside
    ``staged_updates()`` the writes wait for the end of that block.
    """
    scales = scales if scales is not None else (1.0,) * len(params)
    if max_norm is None:
        # sum |c_j| bounds every coefficient too: within a dtype's range, their cast to it stays finite.
        total = float(coeffs.abs().sum())
        check_update_finite(tuple(pn.param for pn in params), [total * _noise_max(pn) for pn in params],
                            [alpha * s for s in scales])

        def write():
            for pn, scale in zip(params, scales):
                c = coeffs.to(device=pn.param.device, dtype=pn.param.dtype)
                ops.rpe_update_(pn.param.data, c, plan.seed, plan.step, pn.stream, pn.rank, alpha * scale)
        _write(write)
        return
    updates = []
    for pn in params:
        u = torch.zeros_like(pn.param.data, memory_format=torch.contiguous_format)
        ops.rpe_update_(u, coeffs.to(device=u.device, dtype=u.dtype), plan.seed, plan.step, pn.stream, pn.rank, 1.0)
        updates.append(u)
    maxima = torch.stack([torch.linalg.vector_norm(u, math.inf).double() for u in updates]).tolist() if updates else []
    if not all(math.isfinite(m) for m in maxima):
        raise NonFiniteUpdate("the update is not finite (its coefficients overflow the parameters' dtype)")
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(u, dtype=torch.float64)
                                                         for u in updates])))
    clip = min(1.0, max_norm / norm) if norm > 0 else 1.0
    check_update_finite(tuple(pn.param for pn in params), maxima, [alpha * clip * s for s in scales])

    def write_buffers():
        for pn, u, scale in zip(params, updates, scales):
            pn.param.data.add_(u, alpha=alpha * clip * scale)
    _write(write_buffers)


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def start_losses(loss_of: Callable[[], torch.Tensor], members: range) -> Tuple[torch.Tensor, bool]:
    """NaN losses for ``members``, with the unperturbed model's (member 0) evaluated first where it is among them;
    False when that loss is not finite (the step will be skipped: no point evaluating the other members)."""
    losses = torch.full((len(members),), float("nan"), dtype=torch.float64)
    if 0 in members:
        losses[0] = loss_of()
        return losses, is_finite(losses[0])
    return losses, True


def check_scalar_loss(loss, what: str = "closure") -> torch.Tensor:
    """The loss as a 0-d tensor; raises if it is not one value."""
    if not isinstance(loss, torch.Tensor):
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            return torch.tensor(float(loss), dtype=torch.float64)  # a Python float is float64: keep its digits
        raise TypeError(f"{what} must return a real scalar loss (tensor or float), got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"{what} must return a scalar loss, got a tensor of shape {tuple(loss.shape)}")
    if loss.is_complex() or loss.dtype == torch.bool:
        raise TypeError(f"{what} must return a real scalar loss, got a {loss.dtype} tensor")
    return loss.detach().reshape(())


def mean_abs(delta: torch.Tensor) -> float:
    return float(delta.abs().mean()) if delta.numel() else 0.0


__all__ = ["reward_prediction_errors", "wp_coefficients", "apply_noise_combination", "staged_updates", "start_losses",
           "check_update_finite", "NonFiniteUpdate",
           "check_scalar_loss", "is_finite", "mean_abs"]
