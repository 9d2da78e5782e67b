"""Weight-perturbation optimizers shaped like ``torch.optim``."""

from ..plan import ParamNoise, PerturbationPlan
from .divergence import DivergenceError
from .dopamine import PRESETS, Dopamine
from .dopamine2 import Dopamine2
from .perturbation_gradient import PerturbationGradient
from .perturbation_optimizer import PerturbationOptimizer
from .weight_perturbation import WeightPerturbation

__all__ = ["Dopamine", "Dopamine2", "WeightPerturbation", "PerturbationGradient", "PerturbationOptimizer",
           "PerturbationPlan", "ParamNoise", "PRESETS", "DivergenceError"]
