"""``Parallel``: how one optimizer step is spread over the ranks of a ``torch.distributed`` process group.

Every rank regenerates every member's noise from (seed, step, stream, id), so ranks exchange member losses only:

- ``mode="members"``: each rank evaluates its share of the ``1 + K`` members (``sharding.member_ranges``) on
  the whole batch; the shares' losses are all-gathered (K + 1 floats per step).
- ``mode="data"``: each rank holds a shard of the batch and evaluates all members on it; the member losses are
  all-reduced as a mean weighted by shard size (K + 2 floats per step).

Either way every rank then holds the same K + 1 losses and applies the same update, so the weights stay
bit-identical without ever sending a parameter; ``check_every`` steps the ranks compare a parameter checksum.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch
import torch.distributed as dist

from .checksum import bit_hash, float_sum
from .sharding import member_ranges

MODES = ("members", "data")


class DriftError(RuntimeError):
    """The ranks' parameters (or optimizer step and seed) are no longer identical."""


class Parallel:
    """Pass as ``process_group=`` to ``Dopamine`` or ``WeightPerturbation`` (a bare ``ProcessGroup`` means
    ``Parallel(group)``).

    Args:
        group: the ``torch.distributed`` process group (None: the default group; it must be initialised).
        mode: "members" (shard the members) or "data" (shard the batch; each rank passes its own shard).
        check_every: compare a checksum of the parameters every this many steps, from step 0 (0: never).
        shard_size: data mode on the closure path: this rank's share of the batch, the weight of its losses
            (None: equal weights). On the population path the weight is ``len(targets)``. Weighting by rows
            reproduces the full batch's loss when each loss is a mean over rows (mse, bce, cross-entropy
            without ignored targets).
    """

    def __init__(self, group=None, mode: str = "members", check_every: int = 100,
                 shard_size: Optional[int] = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0:
            raise ValueError(f"check_every must be an integer >= 0, got {check_every!r}")
        if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int)
                                       or shard_size < 1):
            raise ValueError(f"shard_size must be None or an integer >= 1, got {shard_size!r}")
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("process_group: torch.distributed is not initialised; call "
                             "torch.distributed.init_process_group first (torchrun sets up its environment)")
        self.group = group
        self.mode = mode
        self.check_every = check_every
        self.shard_size = shard_size
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        # Collectives run on the GPU under NCCL, on the CPU under gloo.
        cuda = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self.payload_bytes = 0  # bytes this rank contributed to collectives so far (for benchmarks)

    def __repr__(self) -> str:
        return (f"Parallel(mode={self.mode!r}, rank={self.rank}, world_size={self.world_size}, "
                f"check_every={self.check_every})")

    # -- members ---------------------------------------------------------------------------------------------
    def shares(self, plan) -> List[range]:
        """Each rank's members of ``plan`` (all of them on every rank in data mode)."""
        if self.mode == "data":
            return [range(plan.num_members)] * self.world_size
        return member_ranges(plan.num_members, self.world_size, plan.antithetic)

    def local_plan(self, plan):
        """``plan`` restricted to the members this rank evaluates."""
        if self.mode == "data":
            return plan
        return dataclasses.replace(plan, members=self.shares(plan)[self.rank])

    def combine(self, local_losses: torch.Tensor, plan, targets=None) -> torch.Tensor:
        """The ``1 + K`` losses of every rank's members, identical on every rank (float64, on the CPU)."""
        local = torch.as_tensor(local_losses).detach().reshape(-1).to(self.device, torch.float64)
        if self.mode == "data":
            weight = float(self.shard_weight(targets))
            packed = torch.cat([local * weight, local.new_full((1,), weight)])
            self._collective(dist.all_reduce, packed)
            return (packed[:-1] / packed[-1]).cpu()
        shares = self.shares(plan)
        if local.numel() != len(shares[self.rank]):
            raise ValueError(f"rank {self.rank} evaluated {local.numel()} members, expected "
                             f"{len(shares[self.rank])} (members {shares[self.rank]})")
        width = max(len(s) for s in shares)  # all_gather takes equal sizes: pad the shorter shares
        padded = torch.cat([local, local.new_full((width - local.numel(),), float("nan"))])
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._collective(dist.all_gather, gathered, padded)
        return torch.cat([g[:len(s)] for g, s in zip(gathered, shares)]).cpu()

    def shard_weight(self, targets=None) -> int:
        """Data mode: the weight of this rank's losses, its shard size (``len(targets)``, else ``shard_size``)."""
        if isinstance(targets, torch.Tensor) and targets.dim():
            return len(targets)
        return self.shard_size or 1

    def _collective(self, fn, *tensors) -> None:
        out = tensors[-1]
        self.payload_bytes += out.numel() * out.element_size()
        fn(*tensors, group=self.group)

    # -- drift guard -----------------------------------------------------------------------------------------
    def check_drift(self, optimizer) -> None:
        """Raise ``DriftError`` on every rank if any rank's parameters, step or seed differ (every
        ``check_every`` steps; a collective, so every rank must call it at the same step)."""
        global_state = optimizer.state["global"]
        if not self.check_every or global_state["step"] % self.check_every:
            return
        params = [p for g in optimizer.param_groups for p in g["params"]]
        mine = torch.tensor([bit_hash(params), global_state["step"], global_state["seed"]], dtype=torch.int64)
        rows = [torch.empty_like(mine, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(rows, mine.to(self.device), group=self.group)
        rows = [tuple(r.tolist()) for r in rows]
        if len(set(rows)) == 1:
            return
        sums = [torch.empty(1, dtype=torch.float64, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(sums, torch.tensor([float_sum(params)], dtype=torch.float64, device=self.device),
                        group=self.group)
        # The drifted ranks are those outside the largest group of equal checksums (ties: rank 0's group wins).
        majority = max(rows, key=lambda r: (rows.count(r), r == rows[0]))
        drifted = [i for i, r in enumerate(rows) if r != majority]
        detail = ", ".join(f"rank {i}: step {r[1]}, seed {r[2]}, sum {float(s):.17g}"
                           for i, (r, s) in enumerate(zip(rows, sums)))
        raise DriftError(f"dopamine_fast.distributed: the ranks' parameters are no longer identical at step "
                         f"{global_state['step']}: rank(s) {drifted} drifted from the others ({detail}). Every "
                         f"rank must start from the same weights, seed and checkpoint; restart from a common "
                         f"checkpoint.")


def as_parallel(process_group) -> Optional[Parallel]:
    """``process_group=`` of the optimizers: None, a ``Parallel``, or a ``torch.distributed`` ProcessGroup."""
    if process_group is None or isinstance(process_group, Parallel):
        return process_group
    if dist.is_available() and isinstance(process_group, dist.ProcessGroup):
        return Parallel(process_group)
    raise TypeError(f"process_group must be None, a torch.distributed ProcessGroup or a "
                    f"dopamine_fast.distributed.Parallel, got {type(process_group).__name__}")
