"""The one step interface the training loop drives, whatever the optimizer (perturbations, back-propagation, PGPE).

A ``Stepper`` hides how a step is taken, so the loop is the same for every optimizer and the perturbation step
can be swapped for the batched ``Population`` path without touching the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Stepper:
    """``step(x, y)`` takes one optimizer step on a batch and returns the loss before it."""

    step: Callable[[torch.Tensor, torch.Tensor], float]
    evaluations_per_step: int  # loss evaluations one step costs (a forward+backward counts as one)
    lr: Callable[[], float]
