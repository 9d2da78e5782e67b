"""Running the built-in tasks: optimizers behind one step interface, the training loop, comparisons, reports."""

from .compare import compare, write_compare
from .optimizers import DESCRIPTIONS, HPARAMS, OPTIMIZERS, available_optimizers, hparams_for
from .runner import RunResult, train

__all__ = ["compare", "write_compare", "train", "RunResult", "OPTIMIZERS", "DESCRIPTIONS", "HPARAMS",
           "available_optimizers", "hparams_for"]
