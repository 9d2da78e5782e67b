"""Base class of the weight-perturbation optimizers: members, the drop-in step, state, bad input."""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import torch
from torch.optim import Optimizer

from ..ops import member_noise_ids
from ..ops.noise import MAX_SEED
from .functional import (ParamNoise, PerturbationPlan, check_scalar_loss, is_finite, member_perturbations,
                         reward_prediction_errors)

GLOBAL_STATE = "global"


def check_number(name: str, value, low=None, high=None, low_open=False, high_open=False, integer=False):
    """Raise ValueError naming ``name`` and ``value`` unless ``value`` lies in the given range."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


class PerturbationOptimizer(Optimizer):
    """Shared machinery of ``WeightPerturbation`` and ``Dopamine``; subclasses implement ``_update``.

    A step evaluates ``M = 1 + K`` members: the unperturbed parameters and K perturbed copies
    (antithetic pairs ``+eps_j, -eps_j`` when asked), with noise regenerated from (seed, step, stream, id)
    and never stored. ``step(closure)`` evaluates them one after the other in place (perturb, evaluate,
    restore from one O(P) copy); ``step_from_losses(losses)`` takes the M losses from a batched evaluator
    that followed ``plan()``.
    """

    def __init__(self, params, defaults, num_perturbations: int, antithetic: bool, seed: int):
        check_number("num_perturbations", num_perturbations, low=1, integer=True)
        if antithetic and num_perturbations % 2:
            raise ValueError(f"num_perturbations must be even with antithetic=True (pairs +eps, -eps), "
                             f"got {num_perturbations}")
        check_number("seed", seed, low=0, high=MAX_SEED, integer=True)
        super().__init__(params, defaults)
        self.state[GLOBAL_STATE] = {"step": 0, "skipped_steps": 0, "seed": seed,
                                    "num_perturbations": num_perturbations, "antithetic": bool(antithetic)}

    # -- parameters and hyperparameters ---------------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group)
            devices = {p.device for g in self.param_groups for p in g["params"]}
            if len(devices) > 1:
                raise ValueError(f"all parameters must be on one device, got {sorted(map(str, devices))}")
        except ValueError:
            self.param_groups.pop()
            raise

    def _check_group(self, group) -> None:
        check_number("lr", group["lr"], low=0)
        check_number("sigma", group["sigma"], low=0, low_open=True)
        check_number("rank", group["rank"], low=0, integer=True)
        if group["max_grad_norm"] is not None:
            check_number("max_grad_norm", group["max_grad_norm"], low=0, low_open=True)
        for p in group["params"]:
            if p.is_sparse or p.layout != torch.strided:
                raise ValueError(f"parameters must be dense tensors, got layout {p.layout}")
            if not p.is_floating_point():
                raise ValueError(f"parameters must have a floating dtype, got {p.dtype} "
                                 f"(shape {tuple(p.shape)})")

    @property
    def num_members(self) -> int:
        """Members per step: the unperturbed model and K perturbed copies."""
        return 1 + self.state[GLOBAL_STATE]["num_perturbations"]

    evaluations_per_step = num_members

    @property
    def current_lr(self) -> float:
        return self.param_groups[0]["lr"]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because a loss was not finite."""
        return self.state[GLOBAL_STATE]["skipped_steps"]

    def plan(self) -> PerturbationPlan:
        """The noise of the next step: seed, step, members and each parameter's stream, sigma and rank."""
        st = self.state[GLOBAL_STATE]
        params, stream = [], 0
        for group in self.param_groups:
            for p in group["params"]:
                params.append(ParamNoise(p, stream, group["sigma"], group["rank"]))
                stream += 1
        return PerturbationPlan(st["seed"], st["step"], self.num_members, st["antithetic"], tuple(params))

    # -- stepping --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None, *, population: Optional[Callable] = None, inputs=None,
             targets=None) -> float:
        """One step with a closure that returns the model's current loss (evaluated without backward).

        Returns the unperturbed loss. The closure runs ``1 + K`` times, under ``torch.no_grad``.
        With ``population`` (a ``dopamine_fast.Population`` of the model) instead of a closure, the ``1 + K``
        members are evaluated on ``(inputs, targets)`` in one batched pass: ``population(plan(), inputs, targets)``.
        """
        if population is not None:
            if closure is not None:
                raise ValueError(f"{type(self).__name__}.step takes a closure or a population, not both")
            return self.step_from_losses(population(self.plan(), inputs, targets))
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that returns the loss (or population=, "
                             f"inputs=, targets=); without gradients the optimizer must evaluate the model itself")
        return self.step_from_losses(self._evaluate_in_place(closure, self.plan()))

    def _evaluate_in_place(self, closure: Callable, plan: PerturbationPlan) -> torch.Tensor:
        losses = torch.full((plan.num_members,), float("nan"), dtype=torch.float64)
        losses[0] = check_scalar_loss(closure()).double()
        if not is_finite(losses[0]):
            return losses  # the step is skipped: no point evaluating the members
        backup = [pn.param.detach().clone() for pn in plan.params]
        ids, signs = member_noise_ids(plan.num_members, True, plan.antithetic)
        eps, eps_id = None, None
        for m in range(1, plan.num_members):
            if int(ids[m]) != eps_id:  # an antithetic pair's two members share one draw
                eps_id = int(ids[m])
                eps = [member_perturbations(pn, plan, eps_id, 1)[0] for pn in plan.params]
            for pn, e in zip(plan.params, eps):
                pn.param.add_(e, alpha=float(signs[m]) * pn.sigma)
            losses[m] = check_scalar_loss(closure()).double()
            for pn, saved in zip(plan.params, backup):
                pn.param.copy_(saved)
        return losses

    @torch.no_grad()
    def step_from_losses(self, losses: torch.Tensor) -> float:
        """Update from the losses of the ``1 + K`` members of ``plan()`` (member 0 unperturbed)."""
        losses = torch.as_tensor(losses).detach().reshape(-1)
        if losses.numel() != self.num_members:
            raise ValueError(f"expected {self.num_members} losses (the unperturbed model and "
                             f"{self.num_members - 1} perturbed members), got {losses.numel()}")
        st = self.state[GLOBAL_STATE]
        plan = self.plan()
        if not is_finite(losses):
            st["skipped_steps"] += 1
            warnings.warn(f"{type(self).__name__}: a non-finite loss at step {st['step']}; the step was skipped "
                          f"and the weights are unchanged ({st['skipped_steps']} skipped so far)",
                          RuntimeWarning, stacklevel=3)
        else:
            self._update(plan, reward_prediction_errors(losses.double(), plan.antithetic))
        st["step"] += 1
        return float(losses[0])

    def _update(self, plan: PerturbationPlan, delta: torch.Tensor) -> None:
        raise NotImplementedError

    def _group_params(self, plan: PerturbationPlan):
        """``(group, [ParamNoise of its params])`` for each param group, in order."""
        i = 0
        for group in self.param_groups:
            n = len(group["params"])
            yield group, plan.params[i:i + n]
            i += n
