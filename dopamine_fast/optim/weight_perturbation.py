"""Standard weight perturbation (Jabri & Flower 1992, with K perturbations per step)."""

from __future__ import annotations

from typing import Optional

from .functional import apply_noise_combination, reward_prediction_errors, wp_coefficients
from .perturbation_optimizer import PerturbationOptimizer


class WeightPerturbation(PerturbationOptimizer):
    r"""Weight perturbation with a fixed learning rate.

    .. code-block:: text

        input: params w, lr eta, sigma, K perturbations, seed, closure L
        for t = 0, 1, ...:
            eps_j ~ N(0, I) from Philox(seed, t, stream(p), j)      (regenerated, never stored)
            delta_j = L(w + sigma eps_j) - L(w)                     (RPE of member j; L(w) is member 0)
              antithetic: delta_j = (L(w + sigma eps_j) - L(w - sigma eps_j)) / 2, j = 1 .. K/2
            g = (1/n) sum_j delta_j eps_j / sigma                   (n noise ids)
            g <- g * min(1, max_grad_norm / ||g||)                  (only with max_grad_norm, per group)
            w <- w - eta g

    With K = 1 this is classic weight perturbation. ``rank = r >= 1`` draws low-rank noise
    ``eps = A B^T / sqrt(r)`` for matrices (docs/noise.md).

    Args:
        params: parameters or parameter groups (each group may set ``lr``, ``sigma``, ``rank``).
        lr: learning rate eta (>= 0).
        sigma: perturbation scale (> 0).
        num_perturbations: K, perturbed members per step (>= 1; even when antithetic).
        antithetic: evaluate pairs ``+eps, -eps`` (central differences).
        rank: 0 for full-rank noise, r >= 1 for rank-r noise on matrices.
        seed: noise seed in [0, 2**63); the same seed gives the same run.
        max_grad_norm: clip the estimate ``g`` of each group to this norm (None: no clipping), as
            ``clip_grad_norm_`` does for back-propagated gradients; costs one O(P) buffer.
        on_divergence: what to do when the loss stays far above the best seen: "restore" (best weights back, lr
            halved, a warning), "warn" (once), or "raise" (``DivergenceError``); see ``optim/divergence.py``. None
            (default): "restore", or "warn" with ``memory="lean"``, which keeps no copy of the weights.
        process_group: None (one process), a ``torch.distributed`` ProcessGroup or a
            ``dopamine_fast.distributed.Parallel``: ranks share the members (or the batch) and exchange losses.
        memory: "exact" (default: the drop-in step restores the weights bit for bit from one O(P) copy) or
            "lean" (no copy and no noise tensors, restored within rounding: for large models, see
            ``optim/lean.py``).
    """

    def __init__(self, params, lr: float = 0.2, sigma: float = 0.05, num_perturbations: int = 16,
                 antithetic: bool = True, rank: int = 0, seed: int = 0, max_grad_norm: Optional[float] = None,
                 on_divergence: Optional[str] = None, process_group=None, memory: str = "exact"):
        defaults = dict(lr=lr, sigma=sigma, rank=rank, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults, num_perturbations, antithetic, seed, on_divergence,
                         process_group, memory)

    def _update(self, plan, losses):
        delta = reward_prediction_errors(losses, plan.antithetic)
        for group, pns in self._group_params(plan):
            apply_noise_combination(plan, pns, wp_coefficients(delta, group["sigma"]), -group["lr"],
                                    group["max_grad_norm"])
