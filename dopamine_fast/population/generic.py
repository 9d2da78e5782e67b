"""The generic path: any module, through ``torch.func.functional_call`` + ``torch.func.vmap`` over members.

Members are evaluated in chunks; a chunk materialises its members' perturbed parameters [m, *shape] from the
plan's noise (the same noise the fused ops and the drop-in step regenerate), so at most one chunk of perturbed
parameters exists at a time and the chunk size never changes the result.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._python_dispatch import TorchDispatchMode

from ..plan import ParamNoise, PerturbationPlan, member_noise_ids
from ..plan_noise import member_perturbations
from .losses import member_losses

# Perturbed parameters one chunk may hold when the user sets no chunk size.
DEFAULT_CHUNK_BYTES = 256 * 2**20


def member_parameters(pn: ParamNoise, plan: PerturbationPlan, ids: torch.Tensor,
                      signs: torch.Tensor) -> torch.Tensor:
    """``w + s_m sigma eps_m`` for the members with noise ids ``ids`` and signs ``signs``: [m, *w.shape]."""
    p = pn.param.detach()
    first = int(ids.min())
    eps = member_perturbations(pn, plan, first, int(ids.max()) - first + 1)[(ids - first).to(p.device)]
    scale = (signs.to(device=p.device, dtype=p.dtype) * pn.sigma).reshape(-1, *[1] * p.dim())
    return eps.mul_(scale).add_(p)


class CreatedBytes(TorchDispatchMode):
    """Bytes of every new tensor the ops inside create (views and in-place results excluded): an upper bound on
    what they hold at once, since it ignores what they free along the way."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and not t._is_view() and id(t) not in inputs:
                self.bytes += t.numel() * t.element_size()
        return out


class GenericPath:
    """Evaluates a model's members in chunks of ``chunk_size`` (None: as many as fit in DEFAULT_CHUNK_BYTES, or,
    with ``max_memory``, as many as fit in that budget: the first member alone, measured, sizes the chunks).

    Modules that ``vmap`` cannot batch (``nn.LSTM``, for one) are evaluated member by member within each chunk,
    with a one-time warning; the result is the same.
    """

    def __init__(self, model: nn.Module, chunk_size: Optional[int], max_memory: Optional[int] = None):
        self.model = model
        self.chunk_size = chunk_size
        self.max_memory = max_memory
        self.batches_with_vmap = True

    def __call__(self, plan: PerturbationPlan, noise: Dict[int, ParamNoise], inputs, targets,
                 loss_fn: Callable) -> torch.Tensor:
        perturbed = [(name, noise[id(p)]) for name, p in self.model.named_parameters() if id(p) in noise]
        ids, signs = member_noise_ids(plan.num_members, True, plan.antithetic)
        param_bytes = sum(pn.param.numel() * pn.param.element_size() for _, pn in perturbed)
        size = self.chunk_size or (None if self.max_memory else max(1, DEFAULT_CHUNK_BYTES // max(1, param_bytes)))
        losses = []
        members = plan.local_members  # all members, or this rank's share (dopamine_fast.distributed)
        m0 = members.start
        while m0 < members.stop:
            m1 = min(members.stop, m0 + (size or 1))
            params = {name: member_parameters(pn, plan, ids[m0:m1], signs[m0:m1]) for name, pn in perturbed}
            with CreatedBytes() if size is None else contextlib.nullcontext() as probe:
                outputs = self._forward(params, inputs, m1 - m0)
                losses.append(member_losses(loss_fn, outputs, targets, m1 - m0))
            if size is None:  # one member's activations measured: as many members as the budget holds
                size = max(1, self.max_memory // max(1, param_bytes + probe.bytes))
            del params, outputs  # the next chunk's parameters replace these, never sit beside them
            m0 = m1
        return torch.cat(losses)

    def _forward(self, params: Dict[str, torch.Tensor], inputs, count: int):
        def call(member_params):
            return functional_call(self.model, member_params, (inputs,))

        if self.batches_with_vmap:
            # A failed attempt may have updated buffers before failing (BatchNorm's num_batches_tracked): undo it.
            buffers = [(b, b.clone()) for b in self.model.buffers()]
            try:
                return vmap(call, randomness="different")(params)
            except Exception as err:  # noqa: BLE001  (the loop below tells vmap's limits from the model's errors)
                vmap_error = err
                for b, saved in buffers:
                    b.copy_(saved)
        try:
            outputs = torch.stack([call({name: p[k] for name, p in params.items()}) for k in range(count)])
        except (RuntimeError, ValueError) as err:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"{type(self.model).__name__} failed on inputs of shape {shape}: {err}") from err
        if self.batches_with_vmap:
            self.batches_with_vmap = False
            reason = str(vmap_error).strip().splitlines()[0]
            warnings.warn(f"dopamine_fast.Population: torch.func.vmap cannot batch {type(self.model).__name__} "
                          f"({reason}); its members are evaluated one at a time within each chunk",
                          UserWarning, stacklevel=5)
        return outputs
