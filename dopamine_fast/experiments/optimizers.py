"""The optimizers a run can use: their classes by name, per-task-family defaults, checks and ``Stepper`` builders.

Every optimizer is driven through one ``Stepper`` (``stepper.py``), so the training loop is the same for all.
"""

from __future__ import annotations

import importlib.util
from typing import Dict

import torch

import dopamine_fast

from .pgpe import pgpe_popsize, pgpe_stepper
from .stepper import Stepper

PERTURBATION = ("wp", "dopamine", "dopamine_fixed", "dopamine2")
GRADIENT = ("sgd", "adam")
OPTIMIZERS = PERTURBATION + GRADIENT + ("adam_pg", "pgpe")

# The class behind each name (PGPE is EvoTorch's functional API: no class). Its constructor's keywords are the
# settings a run accepts; dopamine2's defaults are the preset's (Dopamine.preset("dopamine2")).
OPTIMIZER_CLASSES = {"wp": dopamine_fast.WeightPerturbation, "dopamine": dopamine_fast.Dopamine,
                     "dopamine_fixed": dopamine_fast.Dopamine, "dopamine2": dopamine_fast.Dopamine2,
                     "sgd": torch.optim.SGD, "adam": torch.optim.Adam}
# The setting each stepper applies itself, not a keyword of the optimizer's constructor.
STEPPER_SETTING = {**dict.fromkeys(PERTURBATION, "spectral_radius"), **dict.fromkeys(GRADIENT, "clip")}

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


def make_optimizer(name: str, params, hp: dict, seed: int):
    """The optimizer ``name`` over ``params`` with the settings ``hp`` (its constructor checks them)."""
    cls = OPTIMIZER_CLASSES[name]
    kwargs = {k: v for k, v in hp.items() if k != STEPPER_SETTING[name]}
    return cls(params, seed=seed, **kwargs) if name in PERTURBATION else cls(params, **kwargs)


def check_settings(name: str, hp: dict) -> int:
    """Raise what building optimizer ``name`` with ``hp`` would raise (TypeError for an unknown keyword,
    ValueError for a bad value); return the loss evaluations one step costs. No model or stepper is built: the
    optimizer's own constructor checks the settings, over one placeholder parameter."""
    check_optimizer(name)
    if name == "pgpe":
        return pgpe_popsize(hp) + 1
    placeholder = [torch.zeros(1, requires_grad=True)]
    if name == "adam_pg":
        return _adam_on_estimate(placeholder, hp, seed=0)[1].evaluations_per_step
    opt = make_optimizer(name, placeholder, hp, seed=0)
    return getattr(opt, "evaluations_per_step", 1)  # back-propagation: one forward+backward


def perturbation_setup(name: str, model: torch.nn.Module, hp: dict, seed: int):
    """The optimizer ``name`` over ``model`` (its recurrent matrix rescaled after every step when ``hp`` asks) and
    the ``Population`` that evaluates its 1 + K members in one batched pass; task losses are the MSE."""
    opt = make_optimizer(name, model.parameters(), hp, seed)
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


def _adam_on_estimate(params, hp, seed):
    """Adam (``hp["lr"]``) fed by ``PerturbationGradient`` (the other settings): OpenAI ES's pairing."""
    params = list(params)
    hp = dict(hp)
    adam = torch.optim.Adam(params, lr=hp.pop("lr"))
    return adam, dopamine_fast.PerturbationGradient(params, seed=seed, **hp)


def _adam_on_estimate_stepper(model, hp, seed) -> Stepper:
    adam, estimator = _adam_on_estimate(model.parameters(), hp, seed)
    population = dopamine_fast.Population(model, loss="mse")

    def step(x, y):
        with torch.no_grad():
            loss = estimator.step(population=population, inputs=x, targets=y)
        adam.step()
        return float(loss)

    return Stepper(step, estimator.evaluations_per_step, lambda: float(adam.param_groups[0]["lr"]))


def _gradient_stepper(name, model, task, hp) -> Stepper:
    clip = hp.get("clip")
    opt = make_optimizer(name, model.parameters(), hp, seed=0)

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
    return pgpe_stepper(model, task, hp)
