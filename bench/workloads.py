"""The networks the population and step benchmarks evaluate, and the PyTorch ways of evaluating K perturbed copies.

Models: ``mlp256`` and ``mlp1024`` (3 tanh layers of that width) and ``rnn512`` (an Elman RNN of 512 tanh units
over 32 steps of a 3-dimensional series, with a linear readout of the last state); the loss is the mean squared
error per member. Ways of evaluating the ``M = K + 1`` members (member 0 unperturbed):

- ``fused_losses``: the package's ops (``perturbed_linear`` with fused tanh, ``perturbed_rnn``), noise regenerated;
- ``loop_losses``: a plain loop, perturbing the parameters in place with ``torch.randn``, forward, restore;
- ``vmap_losses``: ``torch.func.vmap`` over materialised perturbed parameters;
- ``floor_loss``: one plain forward of the unperturbed network on all ``M * B`` rows (the inference floor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from dopamine_fast import ops
from dopamine_fast.optim import ParamNoise, PerturbationPlan

RNN_STEPS = 32
RNN_FEATURES = 3


class ElmanRegressor(nn.Module):
    """Elman RNN (tanh) over a batch-first sequence and a linear readout of the last hidden state.

    Written out rather than ``nn.RNN`` because ``torch.func.vmap`` has no batching rule for ``aten::rnn_tanh``;
    the parameters are named and ordered as ``nn.RNN``'s, so the noise streams match the optimizer's.
    """

    def __init__(self, features: int, hidden: int):
        super().__init__()
        bound = 1 / math.sqrt(hidden)
        self.weight_ih = nn.Parameter(torch.empty(hidden, features).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.readout = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0])
        for t in range(x.shape[1]):
            h = torch.tanh(F.linear(x[:, t], self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh))
        return self.readout(h)


@dataclass
class Workload:
    name: str
    model: nn.Module
    x: torch.Tensor  # one minibatch: [B, in] or [B, T, in]
    y: torch.Tensor  # its targets: [B, out]

    @property
    def is_rnn(self) -> bool:
        return isinstance(self.model, ElmanRegressor)

    @property
    def width(self) -> int:
        """The widest activation of one row (hidden units)."""
        return max(p.shape[0] for p in self.model.parameters())

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def matmul_flops(self, rows: int) -> float:
        """FLOPs of the forward's matrix products over ``rows`` sequences (2 * rows * in * out per product)."""
        if self.is_rnn:
            m = self.model
            per_step = m.weight_ih.numel() + m.weight_hh.numel()
            return 2.0 * rows * (self.x.shape[1] * per_step + m.readout.weight.numel())
        return 2.0 * rows * sum(layer.weight.numel() for layer in self.model if isinstance(layer, nn.Linear))


MODELS = ("mlp256", "mlp1024", "rnn512")


def make_workload(name: str, batch: int, device, seed: int = 0) -> Workload:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name.startswith("mlp"):
        width = int(name[3:])
        layers = []
        for _ in range(3):
            layers += [nn.Linear(width, width), nn.Tanh()]
        model = nn.Sequential(*layers)
        x = torch.randn(batch, width, generator=gen)
        y = torch.randn(batch, width, generator=gen).tanh()
    elif name.startswith("rnn"):
        model = ElmanRegressor(RNN_FEATURES, int(name[3:]))
        x = torch.randn(batch, RNN_STEPS, RNN_FEATURES, generator=gen)
        y = torch.randn(batch, RNN_FEATURES, generator=gen)
    else:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    model = model.to(device).requires_grad_(False)
    return Workload(name, model, x.to(device), y.to(device))


def mse_per_member(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each member: ``out`` [M, B, out] against ``y`` [B, out] -> [M]."""
    return (out - y).pow(2).mean(dim=(-2, -1))


def make_plan(w: Workload, num_members: int, sigma: float, rank: int, antithetic: bool = True,
              seed: int = 1, step: int = 0) -> PerturbationPlan:
    """The noise of one evaluation, laid out as the optimizers lay it out (stream = index in parameters())."""
    params = tuple(ParamNoise(p, i, sigma, rank) for i, p in enumerate(w.model.parameters()))
    return PerturbationPlan(seed, step, num_members, antithetic, params)


def fused_losses(w: Workload, plan: PerturbationPlan) -> torch.Tensor:
    """Losses [M] of the plan's members from the package's batched ops."""
    noise = {id(pn.param): pn for pn in plan.params}
    m = plan.num_members

    def linear(h, layer, activation):
        pw, pb = noise[id(layer.weight)], noise[id(layer.bias)]
        return ops.perturbed_linear(h, layer.weight, layer.bias, plan.seed, plan.step, pw.stream, pb.stream,
                                    pw.sigma, m, pw.rank, True, plan.antithetic, activation)

    if w.is_rnn:
        r = w.model
        pns = [noise[id(p)] for p in (r.weight_ih, r.weight_hh, r.bias_ih, r.bias_hh)]
        h = ops.perturbed_rnn(w.x, None, r.weight_ih, r.weight_hh, r.bias_ih, r.bias_hh, plan.seed, plan.step,
                              [pn.stream for pn in pns], pns[0].sigma, m, pns[0].rank, True, plan.antithetic,
                              "tanh", False)
        out = linear(h, r.readout, "none")
    else:
        out = w.x
        for layer in w.model:
            if isinstance(layer, nn.Linear):
                out = linear(out, layer, "tanh")
    return mse_per_member(out, w.y)


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
    stacked: Dict[str, torch.Tensor] = {}
    for name, p in w.model.named_parameters():
        eps = torch.randn(num_members, *p.shape, device=p.device, dtype=p.dtype)
        eps[0].zero_()  # member 0 is the unperturbed model
        stacked[name] = p.detach() + sigma * eps

    def member_loss(params):
        return F.mse_loss(functional_call(w.model, params, (w.x,)), w.y)

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
