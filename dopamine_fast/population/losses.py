"""Per-member losses: outputs [M, B, ...] of M members and the shared targets [B, ...] give M losses.

Each built-in loss is the mean over the batch that PyTorch's own loss gives for one member, so a population
reproduces a closure like ``lambda: F.mse_loss(model(x), y)``.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # F.cross_entropy's default: such targets count neither in the sum nor in the mean


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_targets(name: str, outputs: torch.Tensor, targets, expected: tuple) -> None:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"the {name} loss needs targets as a tensor, got {type(targets).__name__}")
    if outputs.dim() < 2:
        raise ValueError(f"the {name} loss needs outputs with a batch dimension, got per-member outputs of "
                         f"shape {tuple(outputs.shape[1:])}")
    if tuple(targets.shape) != expected:
        raise ValueError(f"the {name} loss needs targets of shape {expected} for model outputs of shape "
                         f"{tuple(outputs.shape[1:])} (per member), got targets of shape {tuple(targets.shape)}")


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each member, as ``F.mse_loss(output, targets)``."""
    _check_targets("mse", outputs, targets, tuple(outputs.shape[1:]))
    return (outputs - targets).square_().reshape(outputs.shape[0], -1).mean(1)  # one temporary, squared in place


def bce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each member's logits, as ``F.binary_cross_entropy_with_logits``."""
    _check_targets("bce", outputs, targets, tuple(outputs.shape[1:]))
    per = F.binary_cross_entropy_with_logits(outputs, targets.expand_as(outputs), reduction="none")
    return per.reshape(outputs.shape[0], -1).mean(1)


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each member's logits [B, C, ...], as ``F.cross_entropy`` with class indices
    [B, ...] or class probabilities [B, C, ...]."""
    if outputs.dim() < 3:
        raise ValueError(f"the cross_entropy loss needs logits [batch, classes, ...] per member, got per-member "
                         f"outputs of shape {tuple(outputs.shape[1:])}")
    probabilities = isinstance(targets, torch.Tensor) and targets.is_floating_point()
    expected = tuple(outputs.shape[1:]) if probabilities else (outputs.shape[1], *outputs.shape[3:])
    _check_targets("cross_entropy", outputs, targets, expected)
    m, b = outputs.shape[:2]
    logits = outputs.reshape(m * b, *outputs.shape[2:])
    per = F.cross_entropy(logits, targets.expand(m, *targets.shape).reshape(m * b, *targets.shape[1:]),
                          reduction="none", ignore_index=IGNORE_INDEX).reshape(m, -1)
    if probabilities:
        return per.mean(1)
    return per.sum(1) / (targets != IGNORE_INDEX).sum()


BUILTIN = {"mse": mse, "cross_entropy": cross_entropy, "bce": bce}

LossSpec = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def resolve(loss: LossSpec) -> Callable:
    """The per-member loss function a name or a user callable stands for."""
    if isinstance(loss, str):
        if loss not in BUILTIN:
            raise ValueError(f"loss must be one of {sorted(BUILTIN)} or a callable, got {loss!r}")
        return BUILTIN[loss]
    if not callable(loss):
        raise TypeError(f"loss must be one of {sorted(BUILTIN)} or a callable, got {type(loss).__name__}")
    return loss


def member_losses(loss_fn: Callable, outputs, targets, members: int) -> torch.Tensor:
    """``loss_fn(outputs, targets)``, checked to hold one value per member: shape [members]."""
    values = loss_fn(outputs, targets)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (members,):
        raise ValueError(f"the loss must return one value per member, shape ({members},), for outputs of shape "
                         f"{_shape(outputs)} (members first); it returned {_shape(values)}")
    return values
