"""What every built-in task provides: data on a device, a model builder, a loss, and test metrics."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn


class Task:
    """A supervised task with a fixed train and test set, trained on mean squared error.

    Subclasses set the six tensors and implement ``build_model`` and ``evaluate``. ``test_error`` is the one
    number runs are compared on (lower is better); a run has *reached* the task when it is ``<= threshold``.
    Hyper-parameters are chosen on the validation split (``validation_error``), never on the test split.
    """

    name: str
    family: str  # "xor" or "chaotic": picks the default hyper-parameters
    default_hidden: int
    threshold: float
    error_name: str  # what test_error is, for tables and plots
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def build_model(self, hidden: Optional[int] = None) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """Test metrics of ``model``, including ``test_error``."""
        raise NotImplementedError

    def validation_error(self, model: nn.Module) -> float:
        """The ``test_error`` metric on the validation split."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.mean((model(x) - y) ** 2)

    @property
    def num_train(self) -> int:
        return self.x_train.shape[0]

    def to(self, device) -> "Task":
        for attr in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, attr, getattr(self, attr).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def describe(self) -> str:
        return (f"{self.name}: {self.num_train} train / {self.x_val.shape[0]} validation / {self.x_test.shape[0]} "
                f"test samples, "
                f"input {tuple(self.x_train.shape[1:])}, target {tuple(self.y_train.shape[1:])}")
