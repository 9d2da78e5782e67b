"""``Population``: the losses of a model's unperturbed member and its K perturbed copies in one batched pass."""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..optim.interrupts import no_grad
from ..plan import ParamNoise, PerturbationPlan
from .fused import FusedCall, FusedProgram, Unsupported, aligned_chunk, member_chunks
from .generic import GenericPath
from .graph import compile_model, unwrap
from .losses import LossSpec, member_losses, resolve


class Population:
    """Evaluates the ``1 + K`` members of an optimizer step on one minibatch; returns their losses [1 + K].

    Member 0 is the model as it is, member m its parameters ``w + s_m sigma eps_m`` with the noise of
    ``optimizer.plan()`` (docs/noise.md), so the losses equal those of the drop-in ``opt.step(closure)``::

        pop = Population(model, loss="mse")
        opt = dopamine_fast.Dopamine(model.parameters(), num_perturbations=256)
        for x, y in loader:
            opt.step(population=pop, inputs=x, targets=y)
            # the same step by hand: plan = opt.plan(); opt.step_from_losses(pop(plan, x, y), plan)

    Two paths, the same numbers:

    - **fused**: any module (``nn.Sequential``, a custom ``forward``, a ``torch.compile``d model) whose graph,
      as torch.fx traces it, is built from ``nn.Linear``, Elman ``nn.RNN`` layers read out at their final hidden
      state (``LastHidden()``, ``h_n[-1]`` or ``output[:, -1]``), elementwise activations (modules, ``torch.*``,
      ``F.*``), ``nn.Identity``, ``nn.Flatten``, ``nn.Dropout`` in eval mode and residual sums of activations,
      e.g. ``nn.Sequential(nn.RNN(3, 64, batch_first=True), LastHidden(), nn.Linear(64, 3))``. It runs on the
      fused ops: activations are [M, B, features], parameters are never copied per member.
    - **generic**: any other module, through ``torch.func.functional_call`` + ``vmap`` over chunks of
      ``chunk_size`` members; only one chunk of perturbed parameters exists at a time.

    Args:
        model: the module whose parameters the optimizer holds (parameters outside the optimizer stay as they
            are in every member).
        loss: "mse", "cross_entropy", "bce" (with logits), or a callable ``loss(outputs, targets)`` that takes
            the outputs of m members [m, B, ...] and returns one loss per member, shape [m].
        fused: None picks the fused path when the model supports it and otherwise warns once and takes the
            generic path; True demands the fused path (raises when it cannot run); False always takes the
            generic path.
        chunk_size: members per chunk on the generic path (None: as many as fit in 256 MiB of parameters).
        max_memory: a budget in bytes for what one evaluation allocates beyond the model and its inputs
            (activations, kernel scratch, a chunk's perturbed parameters): both paths evaluate the members in
            chunks, the fused path also the batch in chunks of rows where one member's activations alone exceed
            the budget, sized from the layers' shapes (fused) or a one-member probe (generic), with the same
            losses (member chunks: bit for bit on the CPU, docs/noise.md). At least one row of one member is
            evaluated at a time, so a budget below that is exceeded. None: no budget.
    """

    def __init__(self, model: nn.Module, loss: LossSpec = "mse", *, fused: Optional[bool] = None,
                 chunk_size: Optional[int] = None, max_memory: Optional[int] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"{type(model).__name__} has no trainable parameters (requires_grad=True): there is "
                             f"nothing to perturb")
        if fused not in (None, True, False):
            raise ValueError(f"fused must be None, True or False, got {fused!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
        if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, int)
                                       or max_memory < 1):
            raise ValueError(f"max_memory must be None or a number of bytes >= 1, got {max_memory!r}")
        if max_memory is not None and chunk_size is not None:
            raise ValueError("give chunk_size or max_memory, not both: both set how many members a chunk holds")
        self.model = model
        self.loss_fn = resolve(loss)
        self.fused = fused
        self.max_memory = max_memory
        self.generic = GenericPath(unwrap(model), chunk_size, max_memory)
        self.last_path: Optional[str] = None  # "fused" or "generic": the path the latest call took
        self._program: Optional[FusedProgram] = None
        self._off_reason: Optional[str] = "fused=False"  # why the fused path never runs, if it never does
        self._announced = set()
        self._chunks: Dict[tuple, Tuple[int, Optional[int]]] = {}  # sizing key -> (members, rows) per chunk
        self._layout = _layout(model)
        self._compile(stacklevel=4)  # a warning points at the user's Population(...) line

    def _compile(self, stacklevel: int) -> None:
        """Reads the model for the fused path (unless fused=False); where it cannot, says why once."""
        if self.fused is False:
            return
        self._program, self._off_reason, self._chunks = None, None, {}
        try:
            self._program = compile_model(unwrap(self.model))
        except Unsupported as why:
            if self.fused:
                raise ValueError(f"fused=True, but the fused path cannot run {type(self.model).__name__}: "
                                 f"{why}") from None
            self._off_reason = str(why)
            self._announce(self._off_reason, stacklevel=stacklevel)

    @no_grad
    def __call__(self, plan: PerturbationPlan, inputs, targets) -> torch.Tensor:
        """The losses of the plan's members on ``(inputs, targets)``: [1 + K], or [len(plan.members)] for a
        plan restricted to one rank's share (``dopamine_fast.distributed``).

        A model changed since it was read (a layer replaced, ``model[2] = nn.Linear(...)``, a parameter
        reassigned) is read again first: the losses are always those of the model as it is now."""
        layout = _layout(self.model)
        if layout != self._layout:
            self._layout = layout
            self._compile(stacklevel=5)
        noise = self._noise_of(plan)
        if not plan.local_members:  # more ranks than members: this one has none to evaluate
            return next(self.model.parameters()).new_empty(0)
        call = FusedCall(plan, noise, tuple(getattr(inputs, "shape", ())))
        reason = self._fused_blocker(call)
        if reason is None:
            self.last_path = "fused"
            size, max_rows = self._chunk_shape(inputs, call)
            losses = []
            for members in member_chunks(plan.local_members, size):
                outputs = self._program(inputs, call.narrow(members), max_rows)
                losses.append(member_losses(self.loss_fn, outputs, targets, len(members)))
                del outputs  # the next chunk's outputs replace these, never sit beside them
            return losses[0] if len(losses) == 1 else torch.cat(losses)
        if self.fused is None:
            self._announce(reason, stacklevel=4)
        self.last_path = "generic"
        return self.generic(plan, noise, inputs, targets, self.loss_fn)

    def _announce(self, reason: str, stacklevel: int) -> None:
        """Warns once per reason that the model takes the generic path."""
        if reason in self._announced:
            return
        self._announced.add(reason)
        warnings.warn(f"dopamine_fast.Population: {reason}; {type(self.model).__name__} is evaluated on the generic "
                      f"path (torch.func.vmap over members)", UserWarning, stacklevel=stacklevel)

    def _chunk_shape(self, inputs, call: FusedCall) -> Tuple[int, Optional[int]]:
        """Members per chunk, and batch rows per chunk (None: all), that keep the fused path within
        ``max_memory``: as many members as fit with all rows, else one member in chunks of rows."""
        plan = call.plan
        count = len(plan.local_members)
        if self.max_memory is None or not isinstance(inputs, torch.Tensor):
            return count, None
        itemsize = 8 if any(pn.param.dtype == torch.float64 for pn in plan.params) else 4  # the ops' compute dtype
        key = (tuple(inputs.shape), count, itemsize, torch.get_num_threads(), tuple(pn.rank for pn in plan.params))
        if key not in self._chunks:  # the same shapes every step: size the chunks once per shape
            self._chunks[key] = self._size_chunks(inputs, call, count, itemsize)
        return self._chunks[key]

    def _size_chunks(self, inputs, call: FusedCall, count: int, itemsize: int) -> Tuple[int, Optional[int]]:
        rows, threads = self._program.rows(inputs), torch.get_num_threads()

        def chunk_bytes(members: int, chunk_rows: int) -> int:
            # A chunk's outputs are live at its peak (counted there); the loss makes a temporary of their size (the
            # built-in losses make one), and row chunks' outputs sit side by side until the loss.
            peak, output_numel = self._program.footprint(inputs, call, members, chunk_rows, itemsize, threads)
            return peak + 2 * output_numel * members * rows * itemsize

        def most(limit: int, fits) -> int:
            lo, hi = 1, limit  # the largest n <= limit that fits, by bisection (the footprint grows with n)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            return lo

        members = most(count, lambda m: chunk_bytes(m, rows) <= self.max_memory)
        if members == count:
            return count, None
        if members > 1 or chunk_bytes(1, rows) <= self.max_memory:
            # member_chunks puts member 0 in the first chunk besides its perturbed members: one more must fit.
            return aligned_chunk(max(1, members - (call.plan.local_members.start == 0))), None
        return 1, most(rows, lambda r: chunk_bytes(1, r) <= self.max_memory)

    def _noise_of(self, plan: PerturbationPlan) -> Dict[int, ParamNoise]:
        """Each model parameter's noise in the plan, by identity: the optimizer's streams, sigmas and ranks."""
        if not isinstance(plan, PerturbationPlan):
            raise TypeError(f"plan must be a PerturbationPlan (optimizer.plan()), got {type(plan).__name__}")
        own = {id(p) for p in self.model.parameters()}
        foreign = [tuple(pn.param.shape) for pn in plan.params if id(pn.param) not in own]
        if foreign:
            raise ValueError(f"the optimizer holds tensors that are not parameters of {type(self.model).__name__} "
                             f"(shapes {foreign}), which the population cannot perturb: build the optimizer from "
                             f"this model's parameters")
        return {id(pn.param): pn for pn in plan.params}

    def _fused_blocker(self, call: FusedCall) -> Optional[str]:
        """None when this call runs on the fused path, else why not (raises if the user demanded it)."""
        if self._program is None:
            return self._off_reason
        try:
            self._program.check(call)
        except Unsupported as why:
            if self.fused:
                raise ValueError(f"fused=True, but the fused path cannot run {type(self.model).__name__}: "
                                 f"{why}") from None
            return str(why)
        return None


def _layout(model: nn.Module) -> tuple:
    """Every module of ``model`` and each one's own parameters, by identity: what the fused program was read from.
    Cheap enough for every call (no tensor is touched)."""
    return tuple((id(m), *map(id, m._parameters.values())) for m in model.modules())
