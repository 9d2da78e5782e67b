"""Population evaluation: the unperturbed model and K perturbed copies of it in one batched pass."""

from .modules import LastHidden
from .population import Population

__all__ = ["Population", "LastHidden"]
