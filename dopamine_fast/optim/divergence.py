"""The divergence guard: notice a loss that stays far above the best seen, and warn, raise or restore.

A perturbation optimizer with too large a step does not produce NaNs for a long time: the loss just climbs. The
guard watches the unperturbed loss of every step; when it has stayed above ``FACTOR`` times the best seen (for a
positive loss; ``best + (FACTOR - 1) |best|`` in general) *and* above the first loss seen for ``PATIENCE`` steps in a
row, it acts before the step's update (the second condition keeps the jitter of a loss near zero from counting):

- ``"warn"``: one warning naming the learning rate to lower; training goes on.
- ``"raise"``: ``DivergenceError``; the weights are those of the step that saw it, not updated.
- ``"restore"`` (the default; ``PerturbationGradient``, which changes no weight, warns): back to the best weights
  seen (kept in ``optimizer.state[p]["best_weights"]``, one O(P) copy), every group's ``lr`` halved, a warning;
  the diverged step is not applied.
"""

from __future__ import annotations

import math
import warnings

import torch

FACTOR = 10.0
PATIENCE = 5


class DivergenceError(RuntimeError):
    """Raised by ``on_divergence="raise"`` when the loss stays far above the best seen."""


def initial_state() -> dict:
    return {"first_loss": math.nan, "best_loss": math.inf, "strikes": 0, "warned": False, "restores": 0}


def check_state(state) -> None:
    """Raise ValueError unless a loaded guard state could have come from training."""
    if not isinstance(state, dict) or set(state) != set(initial_state()):
        raise ValueError(f"the state's 'divergence' entry must hold {sorted(initial_state())}, got {state!r:.200}")
    for key in ("first_loss", "best_loss"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value == -math.inf:
            raise ValueError(f"divergence state {key} must be a number, got {value!r}")
    if math.isnan(state["best_loss"]) or math.isnan(state["first_loss"]) != math.isinf(state["best_loss"]):
        raise ValueError(f"divergence state first_loss and best_loss disagree: {state['first_loss']!r}, "
                         f"{state['best_loss']!r}")
    for key in ("strikes", "restores"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise ValueError(f"divergence state {key} must be an integer >= 0, got {state[key]!r}")
    if not isinstance(state["warned"], bool):
        raise ValueError(f"divergence state warned must be True or False, got {state['warned']!r}")


def check_param_state(entry, param: torch.Tensor, index: int, others=()) -> None:
    """Raise ValueError unless a loaded per-parameter state holds only the guard's best weights, finite and of the
    parameter's shape (a NaN copy would be written into the weights at the next restore), and the keys ``others``
    (an optimizer's own entries, which it checks itself)."""
    allowed = {"best_weights", *others}
    if not isinstance(entry, dict) or not set(entry) <= allowed:
        raise ValueError(f"the state of parameter {index} may hold only {sorted(allowed)}, got {entry!r:.200}")
    best = entry.get("best_weights")
    if best is None:
        return
    if not isinstance(best, torch.Tensor) or not best.is_floating_point() or best.is_complex():
        raise ValueError(f"best_weights of parameter {index} must be a real floating-point tensor, got {best!r:.100}")
    if best.shape != param.shape:
        raise ValueError(f"best_weights of parameter {index} have shape {tuple(best.shape)}, the parameter "
                         f"{tuple(param.shape)}")
    if not bool(torch.isfinite(best).all()):
        raise ValueError(f"best_weights of parameter {index} are not all finite")


def _diverged(loss: float, state: dict) -> bool:
    best = state["best_loss"]
    return best != 0 and loss > best + (FACTOR - 1) * abs(best) and loss > state["first_loss"]


class DivergenceRule:
    """What the guard does for one ``on_divergence`` mode (the string is what the API and ``state_dict`` hold)."""

    def on_best(self, optimizer) -> None:
        """A new best loss was seen (the weights are those that reached it)."""

    def on_diverged(self, optimizer, state: dict, what: str) -> bool:
        """The loss has diverged (``what`` says how); returns False when the step's update must not be applied."""
        raise NotImplementedError


class Warn(DivergenceRule):
    """One warning naming the learning rate to lower; training goes on."""

    def on_diverged(self, optimizer, state, what):
        if not state["warned"]:
            state["warned"] = True
            warnings.warn(f"{what}; lower lr (now {optimizer.param_groups[0]['lr']:g}), or sigma. "
                          f"(on_divergence='restore' goes back to the best weights and halves lr; 'raise' stops)",
                          RuntimeWarning, stacklevel=5)
        return True


class Raise(DivergenceRule):
    """``DivergenceError``; the weights are those of the step that saw it, not updated."""

    def on_diverged(self, optimizer, state, what):
        raise DivergenceError(f"{what}; lower lr (now {optimizer.param_groups[0]['lr']:g}), or sigma. The weights "
                              f"are those of the step that noticed it, not updated")


class Restore(DivergenceRule):
    """Back to the best weights seen (one O(P) copy, kept at every new best), lr halved, a warning."""

    def on_best(self, optimizer):
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p]["best_weights"] = p.detach().clone()

    def on_diverged(self, optimizer, state, what):
        with torch.no_grad():
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
                for p in group["params"]:
                    best = optimizer.state[p].get("best_weights")
                    if best is not None:
                        p.copy_(best)
        state["strikes"] = 0
        state["restores"] += 1
        warnings.warn(f"{what}; restored the best weights and halved lr to {optimizer.param_groups[0]['lr']:g} "
                      f"(restore {state['restores']})", RuntimeWarning, stacklevel=5)
        return False


RULES = {"warn": Warn(), "raise": Raise(), "restore": Restore()}  # on_divergence -> its rule
MODES = tuple(RULES)


def check(optimizer, state: dict, mode: str, loss: float) -> bool:
    """Account for this step's unperturbed ``loss``; returns False when the step's update must not be applied."""
    rule = RULES[mode]
    if math.isnan(state["first_loss"]):
        state["first_loss"] = loss
    if loss < state["best_loss"]:
        state["best_loss"], state["strikes"] = loss, 0
        rule.on_best(optimizer)
        return True
    state["strikes"] = state["strikes"] + 1 if _diverged(loss, state) else 0
    if state["strikes"] < PATIENCE:
        return True
    what = (f"{type(optimizer).__name__}: the loss ({loss:.4g}) has stayed above {FACTOR:g}x the best seen "
            f"({state['best_loss']:.4g}) for {PATIENCE} steps: the steps are too large")
    return rule.on_diverged(optimizer, state, what)
