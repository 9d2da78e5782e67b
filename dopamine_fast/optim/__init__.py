"""Weight-perturbation optimizers shaped like ``torch.optim``."""

from .divergence import DivergenceError
from .dopamine import PRESETS, Dopamine
from .dopamine2 import Dopamine2
from .functional import ParamNoise, PerturbationPlan
from .perturbation_gradient import PerturbationGradient
from .perturbation_optimizer import PerturbationOptimizer
from .weight_perturbation import WeightPerturbation

__all__ = ["Dopamine", "Dopamine2", "WeightPerturbation", "PerturbationGradient", "PerturbationOptimizer",
           "PerturbationPlan", "ParamNoise", "PRESETS", "DivergenceError"]
