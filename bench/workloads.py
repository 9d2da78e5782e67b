"""The networks the population and step benchmarks train, built as users build them, and the baselines' methods.

Models: ``mlp256`` and ``mlp1024`` (3 tanh layers of that width, an ``nn.Sequential``), ``custom_mlp256`` (the
same layers called from a custom ``nn.Module``'s ``forward``) and ``rnn512`` (``nn.RNN`` of 512 tanh units over
32 steps of a 3-dimensional series, ``LastHidden()``, a linear readout); the loss is the mean squared error.
The package is timed through its public API only (``bench_population.py``: ``df.Population(model)(opt.plan(),
x, y)``; ``bench_step.py``: ``opt.step(population=pop, inputs=x, targets=y)``). The baselines, each on the
``M = K + 1`` members (member 0 unperturbed):

- ``loop_losses``: a plain loop, perturbing the parameters in place with ``torch.randn``, forward, restore;
- ``vmap_losses``: ``torch.func.vmap`` over materialised perturbed parameters;
- ``floor_loss``: one plain forward of the unperturbed network on all ``M * B`` rows (the inference floor).

``torch.func.vmap`` has no batching rule for ``nn.RNN``, so the vmap baseline and the peer libraries run the RNN
written out step by step (``ElmanRegressor``, the same weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import dopamine_fast as df
from dopamine_fast import ops

RNN_STEPS = 32
RNN_FEATURES = 3


class CustomMLP(nn.Module):
    """The MLP as most users write it: layers as attributes, called in ``forward``."""

    def __init__(self, width: int, depth: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


class ElmanRegressor(nn.Module):
    """An ``nn.Sequential(nn.RNN, LastHidden(), nn.Linear)`` written out, for ``vmap`` (see the module docstring)."""

    def __init__(self, rnn_model: nn.Sequential):
        super().__init__()
        rnn, readout = rnn_model[0], rnn_model[2]
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self, name, nn.Parameter(getattr(rnn, f"{name}_l0").detach().clone()))
        self.readout = nn.Linear(readout.in_features, readout.out_features)
        self.readout.load_state_dict(readout.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0])
        for t in range(x.shape[1]):
            h = torch.tanh(F.linear(x[:, t], self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh))
        return self.readout(h)


@dataclass
class Workload:
    name: str
    model: nn.Module  # what the package is given
    baseline_model: nn.Module  # the same function for vmap and the peers (a copy of the RNN, written out)
    x: torch.Tensor  # one minibatch: [B, in] or [B, T, in]
    y: torch.Tensor  # its targets: [B, out]

    @property
    def is_rnn(self) -> bool:
        return isinstance(self.baseline_model, ElmanRegressor)

    @property
    def width(self) -> int:
        """The widest activation of one row (hidden units)."""
        return max(p.shape[0] for p in self.model.parameters())

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def matmul_flops(self, rows: int) -> float:
        """FLOPs of the forward's matrix products over ``rows`` sequences (2 * rows * in * out per product)."""
        weights = [p for name, p in self.model.named_parameters() if "weight" in name]
        if self.is_rnn:
            recurrent = sum(p.numel() for p in weights if p is not weights[-1])
            return 2.0 * rows * (self.x.shape[1] * recurrent + weights[-1].numel())
        return 2.0 * rows * sum(p.numel() for p in weights)

    def member_flops(self, members: int) -> float:
        """The matrix-product FLOPs no evaluation of ``members`` distinct MLP members can skip: the first layer sees
        the batch every member shares (B rows), every later layer a different input per member (members * B rows)."""
        if self.is_rnn:
            raise ValueError("member_flops is defined for the MLPs, whose first layer alone has a shared input")
        first = next(p for name, p in self.model.named_parameters() if "weight" in name)
        batch = self.x.shape[0]
        return self.matmul_flops(members * batch) - 2.0 * (members - 1) * batch * first.numel()


MODELS = ("mlp256", "mlp1024", "custom_mlp256", "rnn512")


def make_workload(name: str, batch: int, device, seed: int = 0) -> Workload:
    """Model ``name`` (``mlp<width>``, ``custom_mlp<width>``, ``rnn<hidden>``) and one minibatch of ``batch``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name.startswith(("mlp", "custom_mlp")):
        width = int(name.rsplit("mlp", 1)[1])
        if name.startswith("custom"):
            model = CustomMLP(width)
        else:
            model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(width, width), nn.Tanh())])
        x = torch.randn(batch, width, generator=gen)
        y = torch.randn(batch, width, generator=gen).tanh()
        baseline = model
    elif name.startswith("rnn"):
        hidden = int(name[3:])
        model = nn.Sequential(nn.RNN(RNN_FEATURES, hidden, batch_first=True), df.LastHidden(),
                              nn.Linear(hidden, RNN_FEATURES))
        x = torch.randn(batch, RNN_STEPS, RNN_FEATURES, generator=gen)
        y = torch.randn(batch, RNN_FEATURES, generator=gen)
        baseline = ElmanRegressor(model)
    else:
        raise ValueError(f"model must be one of {MODELS} (any width), got {name!r}")
    # Trainable, as every nn.Module's parameters are: the package must cope with requires_grad=True.
    return Workload(name, model.to(device), baseline.to(device), x.to(device), y.to(device))


def dopamine(w: Workload, k: int, rank: int, sigma: float) -> df.Dopamine:
    """The optimizer whose ``plan()`` and ``step`` the benchmarks time (antithetic pairs, as recommended)."""
    return df.Dopamine(w.model.parameters(), lr=1e-3, sigma=sigma, num_perturbations=k, antithetic=True,
                       rank=rank)


def loop_losses(w: Workload, num_members: int, sigma: float) -> torch.Tensor:
    """Baseline (a): member by member, perturb in place with ``torch.randn``, forward, restore."""
    params = list(w.model.parameters())
    backup = [p.detach().clone() for p in params]
    losses = torch.empty(num_members, device=w.x.device)
    with torch.no_grad():
        losses[0] = F.mse_loss(w.model(w.x), w.y)
        for k in range(1, num_members):
            for p in params:
                p.add_(torch.randn_like(p), alpha=sigma)
            losses[k] = F.mse_loss(w.model(w.x), w.y)
            for p, saved in zip(params, backup):
                p.copy_(saved)
    return losses


def vmap_losses(w: Workload, num_members: int, sigma: float) -> torch.Tensor:
    """Baseline (b): ``vmap`` of ``functional_call`` over M materialised perturbed parameter sets."""
    model = w.baseline_model
    stacked: Dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        eps = torch.randn(num_members, *p.shape, device=p.device, dtype=p.dtype)
        eps[0].zero_()  # member 0 is the unperturbed model
        stacked[name] = p.detach() + sigma * eps

    def member_loss(params):
        return F.mse_loss(functional_call(model, params, (w.x,)), w.y)

    with torch.no_grad():
        return vmap(member_loss)(stacked)


def floor_inputs(w: Workload, num_members: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The minibatch repeated for every member, as one batch of M * B rows (built once, outside the timing)."""
    x = w.x.expand(num_members, *w.x.shape).reshape(-1, *w.x.shape[1:]).contiguous()
    y = w.y.expand(num_members, *w.y.shape).reshape(-1, *w.y.shape[1:]).contiguous()
    return x, y


def floor_loss(w: Workload, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Baseline (e), the floor: the unperturbed network's forward and loss on all M * B rows at once."""
    with torch.no_grad():
        return F.mse_loss(w.model(x), y)


def normals_per_evaluation(w: Workload, num_members: int, rank: int, antithetic: bool = True) -> int:
    """How many normals one fused evaluation regenerates (what bounds it when the kernel is noise-bound)."""
    ids = ops.num_noise_ids(num_members, True, antithetic)
    per_id = sum(ops.low_rank_numel(p.shape, rank if p.dim() >= 2 else 0) for p in w.model.parameters())
    return ids * per_id

