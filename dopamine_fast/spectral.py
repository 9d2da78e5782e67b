"""Keep a recurrent matrix at a target spectral radius (the chaotic-forecasting recipe rescales after each step)."""

from __future__ import annotations

import math

import torch


def spectral_radius(weight: torch.Tensor) -> float:
    """Largest eigenvalue magnitude of a square matrix."""
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must be a square matrix, got shape {tuple(weight.shape)}")
    return float(torch.linalg.eigvals(weight.detach().double()).abs().max())


@torch.no_grad()
def rescale_spectral_radius_(weight: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """Scale ``weight`` in place so that its spectral radius is ``radius`` (a zero matrix stays zero)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius < math.inf:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    rho = spectral_radius(weight)
    if rho > 0:
        weight.mul_(radius / rho)
    return weight


def keep_spectral_radius(optimizer: torch.optim.Optimizer, weights, radius: float = 1.0):
    """Rescale ``weights`` to ``radius`` after every ``optimizer.step``; returns the hook's handle."""
    weights = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    for w in weights:
        rescale_spectral_radius_(w, radius)

    def hook(opt, args, kwargs):
        for w in weights:
            rescale_spectral_radius_(w, radius)

    return optimizer.register_step_post_hook(hook)
