"""Two moons: two interleaved half circles, the usual first test of a small classifier."""

from __future__ import annotations

import math
from typing import Tuple

import torch


def two_moons(n: int, seed: int = 0, noise: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` points ``[n, 2]`` and their labels 0/1 ``[n]``, drawn as scikit-learn's ``make_moons`` draws them."""
    if n < 1 or noise < 0:
        raise ValueError(f"two_moons needs n >= 1 and noise >= 0, got n={n}, noise={noise}")
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(label[:, None] == 1, lower, upper)
    return x + noise * torch.randn(n, 2, generator=g), label
