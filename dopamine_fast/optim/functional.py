"""Functional core of the perturbation optimizers: reward-prediction errors, learning rates, the update.

Everything here works on the ``M = 1 + K`` member losses of one step (member 0 unperturbed, docs/noise.md) and
holds no state; the optimizer classes keep the state and call these functions.
"""

from __future__ import annotations

from typing import Optional, Tuple

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


def apply_noise_combination(plan: PerturbationPlan, params: Tuple[ParamNoise, ...], coeffs: torch.Tensor,
                            alpha: float, max_norm: Optional[float] = None,
                            scales: Optional[Tuple[float, ...]] = None) -> None:
    """``p += alpha * scale_p * u_p`` with ``u_p = sum_j c_j eps_{p,j}`` for each of ``params``, the noise regenerated.

    ``scales`` (one per parameter, default 1) sizes each parameter's step. Without ``max_norm`` the fused op adds
    straight into the parameters. With it, ``u`` is first built in one O(P) buffer per parameter and scaled by
    ``min(1, max_norm / ||u||)`` (the norm over all ``params``), as ``torch.nn.utils.clip_grad_norm_`` does for
    back-propagated gradients.
    """
    scales = scales if scales is not None else (1.0,) * len(params)
    if max_norm is None:
        for pn, scale in zip(params, scales):
            c = coeffs.to(device=pn.param.device, dtype=pn.param.dtype)
            ops.rpe_update_(pn.param.data, c, plan.seed, plan.step, pn.stream, pn.rank, alpha * scale)
        return
    updates = []
    for pn in params:
        u = torch.zeros_like(pn.param.data, memory_format=torch.contiguous_format)
        ops.rpe_update_(u, coeffs.to(device=u.device, dtype=u.dtype), plan.seed, plan.step, pn.stream, pn.rank, 1.0)
        updates.append(u)
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(u) for u in updates])))
    clip = min(1.0, max_norm / norm) if norm > 0 else 1.0
    for pn, u, scale in zip(params, updates, scales):
        pn.param.data.add_(u, alpha=alpha * clip * scale)


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def check_scalar_loss(loss, what: str = "closure") -> torch.Tensor:
    """The loss as a 0-d tensor; raises if it is not one value."""
    if not isinstance(loss, torch.Tensor):
        if isinstance(loss, (int, float)):
            return torch.tensor(float(loss))
        raise TypeError(f"{what} must return a scalar loss (tensor or float), got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"{what} must return a scalar loss, got a tensor of shape {tuple(loss.shape)}")
    return loss.detach().reshape(())


def mean_abs(delta: torch.Tensor) -> float:
    return float(delta.abs().mean()) if delta.numel() else 0.0


__all__ = ["reward_prediction_errors", "wp_coefficients", "apply_noise_combination", "check_scalar_loss",
           "is_finite", "mean_abs"]
