"""The optimizers a run can use, their per-task-family defaults, and one ``Stepper`` interface over all of them.

A ``Stepper`` hides how a step is taken (perturbations with a closure, back-propagation, an evolution strategy),
so the training loop is the same for every optimizer and the perturbation step can later be swapped for the
batched ``Population`` path without touching the loop.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Dict

import torch

import dopamine_fast

PERTURBATION = ("wp", "dopamine", "dopamine_fixed", "dopamine2")
GRADIENT = ("sgd", "adam")
OPTIMIZERS = PERTURBATION + GRADIENT + ("adam_pg", "pgpe")

DESCRIPTIONS = {
    "wp": "weight perturbation, fixed learning rate",
    "dopamine": "Dopamine: weight perturbation with an RPE-driven learning rate",
    "dopamine_fixed": "Dopamine with its gain frozen (adaptive=False): the ablation",
    "dopamine2": "the third-party 'Dopamine-2' preset (one perturbation, paper's coefficients)",
    "sgd": "SGD with back-propagation (through time for RNNs)",
    "adam": "Adam with back-propagation (through time for RNNs)",
    "adam_pg": "Adam on the perturbation estimate (PerturbationGradient), as OpenAI's evolution strategies",
    "pgpe": "EvoTorch PGPE on the flattened parameters (needs evotorch)",
}

# Defaults per task family. Dopamine has none but sigma: it runs with its constructor's defaults everywhere (lr, K),
# and sigma follows the data's scale (the chaotic series' 64-512-unit RNNs take weights of RMS ~0.05, which a
# perturbation of 0.05 would swamp). The other methods' rates are theirs per family, as Adam's differ; the quality
# benchmark sweeps each learning rate from 1/4x to 4x these on validation data (bench/bench_quality.py).
# BPTT on the chaotic series clips the gradient norm at 1, the usual guard against exploding gradients.
HPARAMS: Dict[str, Dict[str, dict]] = {
    "xor": {
        "wp": dict(lr=1.0, sigma=0.1, num_perturbations=8, antithetic=True),
        "dopamine": dict(),
        "dopamine_fixed": dict(adaptive=False),
        "dopamine2": dict(),
        "sgd": dict(lr=1.0),
        "adam": dict(lr=0.05),
        "adam_pg": dict(lr=0.05, sigma=0.1, num_perturbations=8, antithetic=True),
        "pgpe": dict(popsize=8, center_lr=0.1, stdev_init=0.3),
    },
    "chaotic": {
        # Clipped like the BPTT baselines: the zero-order estimate's norm is about sqrt(P / K) times the
        # gradient's, so 20 here plays the role of their 1. Unclipped, 2-5 of 5 seeds blew up (1e8 NRMSE).
        "wp": dict(lr=0.02, sigma=1e-3, num_perturbations=16, antithetic=True, max_grad_norm=20.0),
        # Dopamine's step is bounded by construction (RPEs scaled by their reference level): no clip.
        "dopamine": dict(sigma=1e-3),
        "dopamine_fixed": dict(sigma=1e-3, adaptive=False),
        "dopamine2": dict(spectral_radius=1.0),
        "sgd": dict(lr=0.1, clip=1.0),
        "adam": dict(lr=3e-3, clip=1.0),
        "adam_pg": dict(lr=3e-3, sigma=1e-3, num_perturbations=16, antithetic=True),
        "pgpe": dict(popsize=16, center_lr=0.01, stdev_init=0.01),
    },
}


@dataclass
class Stepper:
    """``step(x, y)`` takes one optimizer step on a batch and returns the loss before it."""

    step: Callable[[torch.Tensor, torch.Tensor], float]
    evaluations_per_step: int  # loss evaluations one step costs (a forward+backward counts as one)
    lr: Callable[[], float]


def available_optimizers() -> list:
    """Optimizer names usable here: PGPE only when EvoTorch is installed."""
    return [n for n in OPTIMIZERS if n != "pgpe" or importlib.util.find_spec("evotorch") is not None]


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if name not in available_optimizers():
        raise ValueError(f"optimizer {name!r} needs the evotorch package (pip install evotorch)")


def hparams_for(family: str, name: str, **overrides) -> dict:
    """The defaults for ``name`` on a task family, with the non-``None`` overrides applied."""
    check_optimizer(name)
    hp = dict(HPARAMS[family][name])
    hp.update({k: v for k, v in overrides.items() if v is not None})
    return hp


def _perturbation_optimizer(name: str, params, hp: dict, seed: int):
    cls_name = "WeightPerturbation" if name == "wp" else "Dopamine"
    cls = getattr(dopamine_fast, cls_name, None)
    if cls is None:
        raise RuntimeError(f"dopamine_fast.{cls_name} is not available in this build")
    kwargs = {k: v for k, v in hp.items() if k != "spectral_radius"}
    if name == "dopamine2":
        return cls.preset("dopamine2", params, seed=seed, **kwargs)
    return cls(params, seed=seed, **kwargs)


def perturbation_setup(name: str, model: torch.nn.Module, hp: dict, seed: int):
    """The optimizer ``name`` over ``model`` (its recurrent matrix rescaled after every step when ``hp`` asks) and
    the ``Population`` that evaluates its 1 + K members in one batched pass; task losses are the MSE."""
    opt = _perturbation_optimizer(name, model.parameters(), hp, seed)
    radius = hp.get("spectral_radius")
    recurrent = getattr(model, "recurrent_weight", None)
    if radius is not None and recurrent is not None:
        dopamine_fast.keep_spectral_radius(opt, recurrent, radius)
    return opt, dopamine_fast.Population(model, loss="mse")


def _perturbation_stepper(name, model, task, hp, seed) -> Stepper:
    opt, population = perturbation_setup(name, model, hp, seed)

    def step(x, y):
        with torch.no_grad():
            loss = opt.step(population=population, inputs=x, targets=y)
        return float(loss)

    return Stepper(step, opt.evaluations_per_step, lambda: float(opt.current_lr))


def _adam_on_estimate_stepper(model, hp, seed) -> Stepper:
    hp = dict(hp)
    adam = torch.optim.Adam(model.parameters(), lr=hp.pop("lr"))
    estimator = dopamine_fast.PerturbationGradient(model.parameters(), seed=seed, **hp)
    population = dopamine_fast.Population(model, loss="mse")

    def step(x, y):
        with torch.no_grad():
            loss = estimator.step(population=population, inputs=x, targets=y)
        adam.step()
        return float(loss)

    return Stepper(step, estimator.evaluations_per_step, lambda: float(adam.param_groups[0]["lr"]))


def _gradient_stepper(name, model, task, hp) -> Stepper:
    hp = dict(hp)
    clip = hp.pop("clip", None)
    cls = torch.optim.SGD if name == "sgd" else torch.optim.Adam
    opt = cls(model.parameters(), **hp)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model, x, y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return float(loss.detach())

    return Stepper(step, 1, lambda: float(opt.param_groups[0]["lr"]))


def build_stepper(name: str, model: torch.nn.Module, task, hp: dict, seed: int) -> Stepper:
    """A ``Stepper`` training ``model`` on ``task`` with optimizer ``name`` and hyper-parameters ``hp``."""
    check_optimizer(name)
    if name in PERTURBATION:
        return _perturbation_stepper(name, model, task, hp, seed)
    if name in GRADIENT:
        return _gradient_stepper(name, model, task, hp)
    if name == "adam_pg":
        return _adam_on_estimate_stepper(model, hp, seed)
    from .pgpe import pgpe_stepper
    return pgpe_stepper(model, task, hp)
