"""The third-party "Dopamine-2" form, kept to set results beside it (docs/algorithm.md)."""

from __future__ import annotations

from typing import Optional

from .functional import apply_noise_combination, mean_abs, reward_prediction_errors
from .perturbation_optimizer import GLOBAL_STATE, PerturbationOptimizer, check_number


class Dopamine2(PerturbationOptimizer):
    r"""A public third-party reimplementation's "Dopamine-2" (chaotic forecasting), as it is written there.

    .. code-block:: text

        s_0 = sigma, eta_0 = lr
        for t = 0, 1, ...:
            delta_j = L(w + sigma eps_j) - L(w)
            s_t   = beta_s s_{t-1} + (1 - beta_s) mean_j |delta_j|
            eta_t = (1 - beta_lr) eta_{t-1} + beta_lr s_t             (coefficients the other way round from an EMA)
            w    <- w - eta_t (1/n) sum_j delta_j sigma eps_j          (unnormalised)

    With its settings (``Dopamine.preset("dopamine2", params)``: lr 1e-2, sigma 1e-4, one perturbation, betas
    0.9998) an update is of order ``eta sigma^2 |grad L|`` and ``eta_t`` follows ``|RPE| ~ sigma |grad L|``, so the
    weights barely move. ``eta_t`` and ``s_t`` live in ``state["global"]["dopamine2"]``; ``group["lr"]`` is only
    ``eta_0``, so a learning-rate scheduler does not act on this form.
    """

    def __init__(self, params, lr: float = 1e-2, sigma: float = 1e-4, num_perturbations: int = 1,
                 antithetic: bool = False, rank: int = 0, beta_s: float = 0.9998, beta_lr: float = 0.9998,
                 seed: int = 0, max_grad_norm: Optional[float] = None, on_divergence: Optional[str] = None,
                 process_group=None, memory: str = "exact"):
        _check_betas(beta_s, beta_lr)
        defaults = dict(lr=lr, sigma=sigma, rank=rank, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults, num_perturbations, antithetic, seed, on_divergence,
                         process_group, memory)
        self.state[GLOBAL_STATE]["dopamine2"] = {"beta_s": beta_s, "beta_lr": beta_lr, "rpe_level": None,
                                                 "lr": None}

    @property
    def current_lr(self) -> float:
        """``eta_t``, the learning rate of the latest step (``lr`` before the first)."""
        lr = self.state[GLOBAL_STATE]["dopamine2"]["lr"]
        return self.param_groups[0]["lr"] if lr is None else lr

    def _check_global_state(self, saved: dict) -> None:
        st = saved["dopamine2"]
        if not isinstance(st, dict) or set(st) != {"beta_s", "beta_lr", "rpe_level", "lr"}:
            raise ValueError(f"the state's 'dopamine2' entry must hold beta_s, beta_lr, rpe_level and lr, "
                             f"got {st!r:.200}")
        _check_betas(st["beta_s"], st["beta_lr"])
        for key in ("rpe_level", "lr"):
            if st[key] is not None:
                check_number(f"dopamine2 state {key}", st[key], low=0)

    def _update(self, plan, losses):
        st = self.state[GLOBAL_STATE]["dopamine2"]
        delta = reward_prediction_errors(losses, plan.antithetic)
        sigma = self.param_groups[0]["sigma"]
        level = sigma if st["rpe_level"] is None else st["rpe_level"]
        st["rpe_level"] = st["beta_s"] * level + (1 - st["beta_s"]) * mean_abs(delta)
        st["lr"] = (1 - st["beta_lr"]) * self.current_lr + st["beta_lr"] * st["rpe_level"]
        for group, pns in self._group_params(plan):
            apply_noise_combination(plan, pns, delta * (group["sigma"] / delta.numel()), -st["lr"],
                                    group["max_grad_norm"])


def _check_betas(beta_s, beta_lr) -> None:
    """The two smoothing factors, at construction and at ``load_state_dict``."""
    check_number("beta_s", beta_s, low=0, high=1, high_open=True)
    check_number("beta_lr", beta_lr, low=0, high=1, high_open=True)
