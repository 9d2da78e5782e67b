"""Base class of the weight-perturbation optimizers: members, the drop-in step, state, bad input."""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import torch
from torch.optim import Optimizer

from ..distributed.parallel import as_parallel
from ..ops.noise import MAX_NUMEL, MAX_SEED, low_rank_numel
from ..plan import ParamNoise, PerturbationPlan, member_noise_ids
from ..plan_noise import member_perturbations
from . import divergence
from .functional import NonFiniteUpdate, check_scalar_loss, is_finite, staged_updates, start_losses
from .interrupts import deferred_interrupts, no_grad
from .lean import check_memory, default_on_divergence, evaluate_lean

GLOBAL_STATE = "global"
# Options of the whole optimizer, not of a param group (a group that sets them is refused, not ignored).
GLOBAL_OPTIONS = ("num_perturbations", "antithetic", "seed", "memory")
# Entries of state["global"] a loaded state may lack (saved before they existed); the optimizer keeps its own.
OPTIONAL_STATE = ("optimizer", "memory")
# Members are 32-bit counter words (docs/noise.md): 1 + K must stay below 2**32.
MAX_PERTURBATIONS = 2**32 - 2
# A perturbation sigma * eps (|eps| < 7) this large swamps any trainable weight; the bound catches typos such as
# 1e300, whose perturbations are inf in float32, before they turn the weights into NaN.
MAX_SIGMA = 1e6
# The same bound for lr: a step lr * g with lr above it moves the weights by more than any model's scale for any
# useful estimate g, and it catches typos such as lr=1e300 (whose update is inf) before they reach the weights.
# The update itself is bounded again before it is written (functional.apply_noise_combination).
MAX_LR = 1e6
# What autograd says when backward() meets a loss computed under no_grad.
_NO_GRAPH = "does not require grad and does not have a grad_fn"


def plain_number(value):
    """A numpy scalar as the Python number it holds (a state holding numpy types does not load with
    ``torch.load(weights_only=True)``); anything else as it is."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


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
    restore from one O(P) copy; with ``memory="lean"`` no copy, see ``optim/lean.py``);
    ``step_from_losses(losses, plan)`` takes the M losses from a batched evaluator that followed ``plan()``
    (the contract: ``dopamine_fast.plan``).

    Guarantees: whatever the closure raises (Ctrl-C included) the weights are restored before the exception goes
    on (bit for bit with ``memory="exact"``, within rounding with ``"lean"``), and the step is not counted. A step
    is atomic against Ctrl-C (and SIGTERM where a handler catches it): perturbing and restoring a member and
    applying the update wait for the signal (``interrupts.py``), so the weights end as before the step or as after
    it. An update that could put a non-finite number into a weight is not written: the step is skipped like one
    with a non-finite loss. Parameters with ``requires_grad=False`` (frozen at
    construction or later) are skipped like ``torch.optim`` skips those without a gradient: never perturbed nor
    updated, on the in-place and the batched path alike; each parameter keeps its noise stream (its position
    among all the parameters), so freezing one changes no other's noise. Hyperparameters are checked at
    construction, at ``load_state_dict`` (which leaves the optimizer as it was when the state is refused) and
    again at every step; ``sigma`` must lie in (0, 1e6], ``lr`` in [0, 1e6] and ``num_perturbations`` in
    [1, 2**32 - 2].
    """

    def __init__(self, params, defaults, num_perturbations: int, antithetic: bool, seed: int,
                 on_divergence: Optional[str] = None, process_group=None, memory: str = "exact"):
        num_perturbations, antithetic, seed = map(plain_number, (num_perturbations, antithetic, seed))
        check_memory(memory)
        on_divergence = default_on_divergence(memory) if on_divergence is None else on_divergence
        _check_options(num_perturbations, antithetic, seed, on_divergence)
        super().__init__(params, defaults)
        self.state[GLOBAL_STATE] = {"optimizer": type(self).__name__, "step": 0, "skipped_steps": 0, "seed": seed,
                                    "num_perturbations": num_perturbations, "antithetic": antithetic,
                                    "on_divergence": on_divergence, "divergence": divergence.initial_state(),
                                    "memory": memory}
        if not any(p.requires_grad for g in self.param_groups for p in g["params"]):
            warnings.warn(f"{type(self).__name__}: no parameter requires grad; frozen parameters "
                          f"(requires_grad=False) are neither perturbed nor updated, so step() changes nothing",
                          UserWarning, stacklevel=3)
        # Scale-out (dopamine_fast.distributed): which members or batch shard this rank evaluates; not state.
        self._parallel = as_parallel(process_group)

    # -- parameters and hyperparameters ---------------------------------------------------------------------
    def add_param_group(self, param_group):
        misplaced = [k for k in GLOBAL_OPTIONS if isinstance(param_group, dict) and k in param_group]
        if misplaced:
            raise ValueError(f"a param group sets {', '.join(misplaced)}, which only the whole {type(self).__name__} "
                             f"takes: pass it to the constructor")
        with warnings.catch_warnings():  # torch only warns of a parameter listed twice; _check_group refuses it
            warnings.filterwarnings("ignore", message="optimizer contains a parameter group with duplicate")
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
        """Raise ValueError naming the hyperparameter unless ``group`` is valid (at construction, load and step).

        Numpy scalars become the Python numbers they hold."""
        for key, value in group.items():
            if key != "params":
                group[key] = plain_number(value)
        misplaced = [k for k in GLOBAL_OPTIONS if k in group]
        if misplaced:  # set after construction: refused rather than silently ignored
            raise ValueError(f"a param group sets {', '.join(misplaced)}, which only the whole {type(self).__name__} "
                             f"takes: pass it to the constructor")
        check_number("lr", group["lr"], low=0, high=MAX_LR)
        check_number("sigma", group["sigma"], low=0, low_open=True, high=MAX_SIGMA)
        check_number("rank", group["rank"], low=0, integer=True)
        if group["max_grad_norm"] is not None:
            check_number("max_grad_norm", group["max_grad_norm"], low=0, low_open=True)
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError("a param group lists a parameter more than once; list each parameter once")
        for p in group["params"]:
            if p.is_sparse or p.layout != torch.strided:
                raise ValueError(f"parameters must be dense tensors, got layout {p.layout}")
            if not p.is_floating_point():  # complex dtypes are not floating point either
                raise ValueError(f"parameters must have a real floating dtype, got {p.dtype} "
                                 f"(shape {tuple(p.shape)})")
            if group["rank"] and p.dim() >= 2 and low_rank_numel(p.shape, group["rank"]) > MAX_NUMEL:
                raise ValueError(f"rank {group['rank']} is too large for the parameter of shape {tuple(p.shape)}: "
                                 f"its low-rank noise would take (out + in) * rank = "
                                 f"{low_rank_numel(p.shape, group['rank'])} normals, more than 2**34; a rank of "
                                 f"min(out, in) = {min(p.shape[0], math.prod(p.shape[1:]))} is full-rank already")

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
        """The noise of the next step: seed, step, members and each trained parameter's stream, sigma and rank.

        The hyperparameters are checked again here, before any weight is touched: ``param_groups`` may have been
        edited since. Frozen parameters (``requires_grad=False`` now) are left out, but keep their stream
        numbers, so freezing one never changes the noise of the others.
        """
        st = self.state[GLOBAL_STATE]
        params, stream, scale = [], 0, self._noise_scale()
        for group in self.param_groups:
            self._check_group(group)
            for p in group["params"]:
                if p.requires_grad:
                    params.append(ParamNoise(p, stream, group["sigma"] * scale, group["rank"]))
                stream += 1
        return PerturbationPlan(st["seed"], st["step"], self.num_members, st["antithetic"], tuple(params))

    def _noise_scale(self) -> float:
        """The factor the next step's perturbations are scaled by, beyond each group's ``sigma`` (1 here)."""
        return 1.0

    # -- stepping --------------------------------------------------------------------------------------------
    @no_grad
    def step(self, closure: Optional[Callable] = None, *, population: Optional[Callable] = None, inputs=None,
             targets=None) -> float:
        """One step with a closure that returns the model's current loss (evaluated without backward).

        Returns the unperturbed loss. The closure runs ``1 + K`` times, under ``torch.no_grad``.
        With ``population`` (a ``dopamine_fast.Population`` of the model) instead of a closure, the ``1 + K``
        members are evaluated on ``(inputs, targets)`` in one batched pass: ``population(plan(), inputs, targets)``.
        With a ``process_group``, this rank evaluates only its share of the members (or all of them on its shard
        of the batch) and the ranks exchange the losses (``dopamine_fast.distributed``).
        """
        if population is not None and closure is not None:
            raise ValueError(f"{type(self).__name__}.step takes a closure or a population, not both")
        if population is None and closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that returns the loss (or population=, "
                             f"inputs=, targets=); without gradients the optimizer must evaluate the model itself")
        plan = local = self.plan()
        if self._parallel is not None:  # this rank evaluates its share, then every rank holds all the losses
            self._parallel.check_drift(self)
            local = self._parallel.local_plan(plan)
        if population is not None:
            losses = population(local, inputs, targets)
        else:
            losses = self._evaluate_in_place(closure, local)
        if self._parallel is not None:
            losses = self._parallel.combine(losses, plan, targets)
        return self.step_from_losses(losses, plan)

    def _evaluate_in_place(self, closure: Callable, plan: PerturbationPlan) -> torch.Tensor:
        """The losses of ``plan.local_members`` (all members, or this rank's share of them)."""
        # Ctrl-C stops the closure at once (its member is undone below) but waits while weights are perturbed or
        # restored, so the weights are never left between two members.
        with deferred_interrupts() as interrupts:
            def loss() -> torch.Tensor:
                with interrupts.allowed():
                    return self._loss_of(closure)

            if self.state[GLOBAL_STATE]["memory"] == "lean":
                return evaluate_lean(loss, plan)
            members = plan.local_members
            losses, go_on = start_losses(loss, members)
            if not go_on:
                return losses
            backup = [pn.param.detach().clone() for pn in plan.params]
            ids, signs = member_noise_ids(plan.num_members, True, plan.antithetic)
            eps, eps_id = None, None
            for m in members[1:] if 0 in members else members:
                if int(ids[m]) != eps_id:  # an antithetic pair's two members share one draw
                    eps_id = int(ids[m])
                    eps = [member_perturbations(pn, plan, eps_id, 1)[0] for pn in plan.params]
                try:
                    for pn, e in zip(plan.params, eps):
                        pn.param.add_(e, alpha=float(signs[m]) * pn.sigma)
                    losses[m - members.start] = loss()
                finally:  # whatever the closure raised (Ctrl-C included), the weights go back bit for bit
                    for pn, saved in zip(plan.params, backup):
                        pn.param.copy_(saved)
        return losses

    def _loss_of(self, closure: Callable) -> torch.Tensor:
        try:
            return check_scalar_loss(closure()).double()
        except RuntimeError as err:
            if _NO_GRAPH not in str(err):
                raise
            raise RuntimeError(f"the closure called backward(), but {type(self).__name__}.step runs it under "
                               f"torch.no_grad and needs no gradients: return the loss without calling backward() "
                               f"(autograd said: {err})") from err

    @no_grad
    def step_from_losses(self, losses: torch.Tensor, plan: Optional[PerturbationPlan] = None) -> float:
        """Finish this step from the losses of its ``1 + K`` members, as a batched evaluator computed them.

        ``losses`` are those of the members of ``plan`` (member 0 unperturbed, docs/noise.md), in order;
        ``plan`` is the one this optimizer built for its current step (``plan()``), as the evaluator followed
        it: ``step_from_losses(population(plan, x, y), plan)``. Without ``plan`` the losses must follow the plan
        ``plan()`` builds now. Returns the unperturbed loss ``losses[0]``.

        A plan of another step, seed or member count, or the wrong number of losses, raises ValueError
        (anything but a ``PerturbationPlan``: TypeError) before anything changes. Losses that are not all
        finite skip the step (weights unchanged, the step counted).
        """
        if plan is None:
            plan = self.plan()
        else:
            self._check_plan(plan)
        # Python floats are float64: as_tensor's default float32 would round them (and make 1e39 inf).
        losses = (losses.detach() if isinstance(losses, torch.Tensor)
                  else torch.as_tensor(losses, dtype=torch.float64)).reshape(-1)
        if losses.is_complex() or not (losses.is_floating_point() or losses.numel() == 0):
            raise TypeError(f"losses must be real floating-point numbers, got {losses.dtype}")
        if losses.numel() != self.num_members:
            raise ValueError(f"expected {self.num_members} losses (the unperturbed model and "
                             f"{self.num_members - 1} perturbed members), got {losses.numel()}")
        st = self.state[GLOBAL_STATE]
        with deferred_interrupts():  # Ctrl-C waits: the update reaches every tensor and the step is counted, or none
            self._begin_update()
            if not is_finite(losses):
                self._skip("a non-finite loss")
            elif divergence.check(self, st["divergence"], st["on_divergence"], float(losses[0])):
                self._apply_update(plan, losses.double())
            st["step"] += 1
        return float(losses[0])

    def _skip(self, why: str) -> None:
        st = self.state[GLOBAL_STATE]
        st["skipped_steps"] += 1
        warnings.warn(f"{type(self).__name__}: {why} at step {st['step']}; the step was skipped and the weights "
                      f"are unchanged ({st['skipped_steps']} skipped so far)", RuntimeWarning, stacklevel=4)

    def _apply_update(self, plan: PerturbationPlan, losses: torch.Tensor) -> None:
        """``_update``, all of it or none: an update that could put a non-finite number into a weight is refused
        before any tensor is written (``functional.NonFiniteUpdate``) and the step is skipped, the subclass's
        state as it was."""
        saved = {k: dict(v) if isinstance(v, dict) else v for k, v in self.state[GLOBAL_STATE].items()}
        try:
            with staged_updates():
                self._update(plan, losses)
        except NonFiniteUpdate as err:
            self.state[GLOBAL_STATE].update(saved)
            self._begin_update()  # whatever _update prepared (PerturbationGradient's .grad) goes, as for a skip
            self._skip(f"a non-finite update ({err})")

    def _check_plan(self, plan) -> None:
        """Raise unless ``plan`` is the plan of this optimizer's current step (same seed, step and members)."""
        if not isinstance(plan, PerturbationPlan):
            raise TypeError(f"plan must be the PerturbationPlan of this step (optimizer.plan()), "
                            f"got {type(plan).__name__}")
        st = self.state[GLOBAL_STATE]
        built = (plan.seed, plan.step, plan.num_members, plan.antithetic)
        current = (st["seed"], st["step"], self.num_members, st["antithetic"])
        if built != current:
            raise ValueError(f"plan is not the plan of {type(self).__name__}'s current step: it has seed={built[0]}, "
                             f"step={built[1]}, num_members={built[2]}, antithetic={built[3]}, the optimizer "
                             f"seed={current[0]}, step={current[1]}, num_members={current[2]}, "
                             f"antithetic={current[3]}; pass the plan() the losses were evaluated with, at this step")

    def _begin_update(self) -> None:
        """Called by ``step_from_losses`` once the losses and plan are accepted, before the update or the skip."""

    def _update(self, plan: PerturbationPlan, losses: torch.Tensor) -> None:
        """Apply the step from the finite member losses [1 + K] (float64) of ``plan``."""
        raise NotImplementedError

    def _group_params(self, plan: PerturbationPlan):
        """``(group, [ParamNoise of its trained params])`` for each param group, in order."""
        noise = {id(pn.param): pn for pn in plan.params}
        for group in self.param_groups:
            yield group, [noise[id(p)] for p in group["params"] if id(p) in noise]

    # -- state -----------------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict) -> None:
        """Load a state saved by ``state_dict()``, after checking it as the constructor checks its arguments.

        A state that fails (another optimizer class, missing or extra keys, a NaN learning rate, ...) raises
        ValueError and leaves this optimizer as it was.
        """
        self._check_state_dict(state_dict)
        own = self.state[GLOBAL_STATE]
        super().load_state_dict(state_dict)
        for key in OPTIONAL_STATE:
            self.state[GLOBAL_STATE].setdefault(key, own[key])

    def _check_state_dict(self, state_dict) -> None:
        name = type(self).__name__
        if (not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict)
                or not isinstance(state_dict["state"], dict)):
            raise ValueError(f"{name}.load_state_dict expects the dict of state_dict() with 'state' and "
                             f"'param_groups', got {type(state_dict).__name__}")
        saved, current = state_dict["state"].get(GLOBAL_STATE), self.state[GLOBAL_STATE]
        if not isinstance(saved, dict):
            raise ValueError(f"the state has no {GLOBAL_STATE!r} entry: it was not saved by a perturbation optimizer")
        if saved.get("optimizer", name) not in {cls.__name__ for cls in type(self).__mro__}:
            raise ValueError(f"the state was saved by {saved['optimizer']}, not {name}")
        missing = sorted(set(current) - set(saved) - set(OPTIONAL_STATE))
        extra = sorted(set(saved) - set(current) - set(OPTIONAL_STATE))
        if missing or extra:
            raise ValueError(f"the state does not fit {name}: missing {missing or 'nothing'}, unexpected "
                             f"{extra or 'nothing'} (saved by another optimizer class or version?)")
        check_number("step", saved["step"], low=0, integer=True)
        check_number("skipped_steps", saved["skipped_steps"], low=0, high=saved["step"], integer=True)
        _check_options(saved["num_perturbations"], saved["antithetic"], saved["seed"], saved["on_divergence"])
        if "memory" in saved:
            check_memory(saved["memory"])
        divergence.check_state(saved["divergence"])
        self._check_global_state(saved)
        groups = state_dict["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"the state's param_groups must be a list of {len(self.param_groups)} groups like "
                             f"{name}'s, got {groups!r:.200}")
        for i, (group, own) in enumerate(zip(groups, self.param_groups)):
            keys = set(own) - {"params"}
            if not isinstance(group, dict) or not keys <= set(group):
                raise ValueError(f"param group {i} of the state lacks {sorted(keys - set(group or ()))}")
            misplaced = [k for k in GLOBAL_OPTIONS if k in group]
            if misplaced:
                raise ValueError(f"param group {i} of the state sets {', '.join(misplaced)}, options of the "
                                 f"whole {name}")
            try:
                self._check_group({**group, "params": own["params"]})
            except ValueError as err:
                raise ValueError(f"param group {i} of the state: {err}") from None
            if not isinstance(group.get("params"), list) or len(group["params"]) != len(own["params"]):
                raise ValueError(f"param group {i} of the state has {len(group.get('params') or ())} parameters, "
                                 f"{name}'s {len(own['params'])}")
        params = {index: p for group, own in zip(groups, self.param_groups) for index, p in zip(group["params"],
                                                                                              own["params"])}
        for index, entry in state_dict["state"].items():
            if index == GLOBAL_STATE:
                continue
            if index not in params:
                raise ValueError(f"the state holds an entry for parameter {index!r}, which no param group lists")
            divergence.check_param_state(entry, params[index], index, self.PARAM_STATE)

    # Per-parameter state entries of a subclass beside the divergence guard's (it checks them in _check_state_dict).
    PARAM_STATE: tuple = ()

    def _check_global_state(self, saved: dict) -> None:
        """Subclasses check their own entries of a loaded ``state["global"]`` here (ValueError naming them)."""


def _check_options(num_perturbations, antithetic, seed, on_divergence) -> None:
    """The options of the whole optimizer, at construction and at ``load_state_dict``."""
    check_number("num_perturbations", num_perturbations, low=1, high=MAX_PERTURBATIONS, integer=True)
    if not isinstance(antithetic, bool):
        raise ValueError(f"antithetic must be True or False, got {antithetic!r}")
    if antithetic and num_perturbations % 2:
        raise ValueError(f"num_perturbations must be even with antithetic=True (pairs +eps, -eps), "
                         f"got {num_perturbations}")
    check_number("seed", seed, low=0, high=MAX_SEED, integer=True)
    if on_divergence not in divergence.MODES:
        raise ValueError(f"on_divergence must be one of {divergence.MODES}, got {on_divergence!r}")
