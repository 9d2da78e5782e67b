"""The perturbation estimate written into ``p.grad``, for any ``torch.optim`` optimizer to apply."""

from __future__ import annotations

from dataclasses import replace

import torch

from .functional import apply_noise_combination, reward_prediction_errors, wp_coefficients
from .perturbation_optimizer import PerturbationOptimizer


class PerturbationGradient(PerturbationOptimizer):
    r"""Estimates the gradient by weight perturbation and stores it in ``p.grad``; changes no weight.

    .. code-block:: text

        delta_j = L(w + sigma eps_j) - L(w)     (antithetic: (L(w + sigma eps_j) - L(w - sigma eps_j)) / 2)
        p.grad  = (1/n) sum_j delta_j eps_j / sigma                (the WP estimate of dL/dp, n noise ids)

    So Adam (as OpenAI's evolution strategies use it), gradient clipping and weight decay stack on top::

        estimator = df.PerturbationGradient(model.parameters(), sigma=0.05, num_perturbations=16)
        adam = torch.optim.Adam(model.parameters(), lr=0.01)
        for x, y in loader:
            estimator.step(closure)          # or estimator.step(population=pop, inputs=x, targets=y)
            adam.step()

    ``step`` returns the unperturbed loss and replaces ``p.grad`` (it does not accumulate). A step whose losses
    are not finite sets ``p.grad = None``, so the optimizer after it leaves the weights alone. Costs one O(P)
    buffer per parameter, as back-propagated gradients do.

    Args:
        params: parameters or parameter groups (groups may set ``sigma`` and ``rank``).
        sigma, num_perturbations, antithetic, rank, seed, process_group, memory: as for ``WeightPerturbation``.
    """

    def __init__(self, params, sigma: float = 0.05, num_perturbations: int = 16, antithetic: bool = True,
                 rank: int = 0, seed: int = 0, process_group=None, memory: str = "exact"):
        # lr 1 and no clipping: the estimate is written as it is; the optimizer applied after it owns the step, so
        # the guard only warns (restoring weights and halving a rate it does not apply would fight that optimizer).
        defaults = dict(lr=1.0, sigma=sigma, rank=rank, max_grad_norm=None)
        super().__init__(params, defaults, num_perturbations, antithetic, seed, on_divergence="warn",
                         process_group=process_group, memory=memory)

    def _begin_update(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None  # a skipped step leaves no stale estimate behind

    def _update(self, plan, losses):
        delta = reward_prediction_errors(losses, plan.antithetic)
        for group, pns in self._group_params(plan):
            for pn in pns:
                pn.param.grad = torch.zeros_like(pn.param, memory_format=torch.contiguous_format)
            grads = tuple(replace(pn, param=pn.param.grad) for pn in pns)
            apply_noise_combination(plan, grads, wp_coefficients(delta, group["sigma"]), 1.0)
