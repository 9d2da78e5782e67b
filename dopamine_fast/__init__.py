"""dopamine_fast: training without back-propagation by weight perturbation, with the Dopamine optimizer.

Fused kernels (C++/CUDA, Triton) regenerate the perturbation noise from a counter-based generator, evaluate many
perturbed copies of a network in one batched pass and apply the reward-prediction-error-scaled update; the pure
PyTorch reference runs everywhere else. ``backend_info()`` says which backend each op uses.
"""

from . import _startup  # noqa: F401  (first: the command line's Ctrl-C handling while torch loads)
from . import ops
from .backends import backend_info, use_backend
from .optim import (PRESETS, DivergenceError, Dopamine, Dopamine2, PerturbationGradient, PerturbationPlan,
                    WeightPerturbation)
from .population import LastHidden, Population
from .spectral import keep_spectral_radius, rescale_spectral_radius_, spectral_radius

__version__ = "0.1.0"

__all__ = ["ops", "backend_info", "use_backend", "Dopamine", "Dopamine2", "WeightPerturbation", "PerturbationGradient",
           "DivergenceError", "PerturbationPlan", "PRESETS",
           "Population", "LastHidden", "keep_spectral_radius", "rescale_spectral_radius_", "spectral_radius",
           "__version__"]
