"""The Dopamine optimizer: weight perturbation with a learning rate driven by the reward-prediction error."""

from __future__ import annotations

from typing import Optional

from .functional import (apply_noise_combination, dopamine2_lr, dopamine_level, dopamine_lr, mean_abs,
                         wp_coefficients)
from .perturbation_optimizer import PerturbationOptimizer, check_number

FORMS = ("dopamine", "dopamine2")

# The third-party "Dopamine-2" reimplementation's settings (docs/algorithm.md): one perturbation, the
# unnormalised update and its learning-rate rule, sigma 1e-4 (Lorenz), betas 0.9998, eta_0 1e-2.
PRESETS = {
    "dopamine2": dict(form="dopamine2", lr=1e-2, sigma=1e-4, num_perturbations=1, antithetic=False,
                      beta_s=0.9998, beta_lr=0.9998),
}


class Dopamine(PerturbationOptimizer):
    r"""Weight perturbation whose learning rate follows a tonic "dopamine level" of RPE magnitude.

    Our reconstruction of Nambusubramaniyan et al., arXiv 2510.22178 (docs/algorithm.md says what is the
    paper's and what is ours):

    .. code-block:: text

        input: params w, eta_0 (lr), sigma, K, beta_s, beta_lr, kappa, [lr_min, lr_max], seed, closure L
        for t = 0, 1, ...:
            delta_j = L(w + sigma eps_j) - L(w)        (antithetic: (L(w+sigma eps_j) - L(w-sigma eps_j)) / 2)
            s_t   = beta_s s_{t-1} + (1 - beta_s) mean_j |delta_j|        (s_0 = the first mean |delta|)
            eta_t = clamp(beta_lr eta_{t-1} + (1 - beta_lr) kappa s_t, lr_min, lr_max)
            g     = (1/n) sum_j delta_j eps_j / sigma
            g    <- g * min(1, max_grad_norm / ||g||)                     (only with max_grad_norm)
            w    <- w - eta_t g

    ``form="dopamine2"`` (or ``Dopamine.preset("dopamine2", params)``) is the third-party Dopamine-2 rule:
    ``s_0 = sigma``, ``eta_t = (1 - beta_lr) eta_{t-1} + beta_lr s_t`` (no clamp, no kappa) and the
    unnormalised update ``w <- w - eta_t (1/n) sum_j delta_j sigma eps_j``.

    ``s_t`` and ``eta_t`` are kept per parameter group (``group["rpe_level"]``, ``group["lr"]``), so they are
    saved by ``state_dict`` and a resumed run continues bit for bit.

    Args:
        params: parameters or parameter groups (groups may set ``lr``, ``sigma``, ``rank``, ``kappa``,
            ``lr_min``, ``lr_max``, ``beta_s``, ``beta_lr``).
        lr: initial learning rate eta_0 (>= 0).
        sigma: perturbation scale (> 0).
        num_perturbations: K (>= 1; even when antithetic).
        antithetic: evaluate pairs ``+eps, -eps``.
        rank: 0 for full-rank noise, r >= 1 for rank-r noise on matrices.
        beta_s: smoothing of the dopamine level, in [0, 1).
        beta_lr: smoothing of the learning rate, in [0, 1).
        kappa: gain from dopamine level to learning rate (>= 0).
        lr_min, lr_max: bounds of the learning rate (0 <= lr_min <= lr_max).
        form: "dopamine" (default) or "dopamine2".
        seed: noise seed in [0, 2**63).
        max_grad_norm: clip each group's update direction to this norm (None: no clipping).
    """

    def __init__(self, params, lr: float = 0.2, sigma: float = 0.05, num_perturbations: int = 16,
                 antithetic: bool = True, rank: int = 0, beta_s: float = 0.9, beta_lr: float = 0.9,
                 kappa: float = 30.0, lr_min: float = 0.01, lr_max: float = 1.0, form: str = "dopamine",
                 seed: int = 0, max_grad_norm: Optional[float] = None):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        defaults = dict(lr=lr, sigma=sigma, rank=rank, beta_s=beta_s, beta_lr=beta_lr, kappa=kappa,
                        lr_min=lr_min, lr_max=lr_max, form=form, rpe_level=None,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults, num_perturbations, antithetic, seed)

    @classmethod
    def preset(cls, name: str, params, **overrides) -> "Dopamine":
        """A Dopamine optimizer with a named preset's settings (``PRESETS``), any of them overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(params, **{**PRESETS[name], **overrides})

    def _check_group(self, group) -> None:
        super()._check_group(group)
        check_number("beta_s", group["beta_s"], low=0, high=1, high_open=True)
        check_number("beta_lr", group["beta_lr"], low=0, high=1, high_open=True)
        check_number("kappa", group["kappa"], low=0)
        check_number("lr_min", group["lr_min"], low=0)
        check_number("lr_max", group["lr_max"], low=0)
        if group["lr_min"] > group["lr_max"]:
            raise ValueError(f"lr_min must be <= lr_max, got lr_min={group['lr_min']} > lr_max={group['lr_max']}")
        if group["form"] not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {group['form']!r}")

    def _update(self, plan, delta):
        magnitude = mean_abs(delta)
        n = delta.numel()
        for group, pns in self._group_params(plan):
            if group["form"] == "dopamine2":
                start = group["sigma"] if group["rpe_level"] is None else group["rpe_level"]
                group["rpe_level"] = dopamine_level(start, magnitude, group["beta_s"])
                group["lr"] = dopamine2_lr(group["lr"], group["rpe_level"], group["beta_lr"])
                coeffs = delta * (group["sigma"] / n)
            else:
                group["rpe_level"] = dopamine_level(group["rpe_level"], magnitude, group["beta_s"])
                group["lr"] = dopamine_lr(group["lr"], group["rpe_level"], group["beta_lr"], group["kappa"],
                                          group["lr_min"], group["lr_max"])
                coeffs = wp_coefficients(delta, group["sigma"])
            apply_noise_combination(plan, pns, coeffs, -group["lr"], group["max_grad_norm"])
