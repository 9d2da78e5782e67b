"""Weight-perturbation optimizers shaped like ``torch.optim``."""

from .dopamine import PRESETS, Dopamine
from .functional import ParamNoise, PerturbationPlan
from .perturbation_optimizer import PerturbationOptimizer
from .weight_perturbation import WeightPerturbation

__all__ = ["Dopamine", "WeightPerturbation", "PerturbationOptimizer", "PerturbationPlan", "ParamNoise", "PRESETS"]
