"""Checkpoints that survive a lost worker: rank 0 writes atomically, every rank resumes from the same file.

Every rank holds the same weights and optimizer state (the drift guard checks it), so one copy suffices. The
file is written to a temporary name in the same folder and renamed with ``os.replace``, so a worker killed
mid-write leaves the previous checkpoint intact, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist


def atomic_save(obj, path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def save_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group=None, **extra) -> None:
    """Write ``model`` and ``optimizer`` state (and ``extra``) to ``path`` from rank 0; all ranks wait for it."""
    if not _distributed() or dist.get_rank(group) == 0:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}, path)
    if _distributed():
        dist.barrier(group=group)


def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Optional[dict]:
    """Restore ``model`` and ``optimizer`` from ``path`` if it exists; returns the checkpoint (None if none)."""
    path = Path(path)
    if not path.exists():
        return None
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state
