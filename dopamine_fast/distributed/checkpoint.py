"""Checkpoints that survive a lost worker: rank 0 writes atomically, every rank resumes from the same file.

Every rank holds the same weights and optimizer state (the drift guard checks it), so one copy suffices. The
file is written to a temporary name in the same folder and renamed with ``os.replace``, so a worker killed
mid-write leaves the previous checkpoint intact, never a torn one.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from .._pids import alive


def atomic_save(obj, path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    The temporary file (``<name>.<pid>.<random>.tmp``, same folder) is removed on any exception; one left by a
    writer that was killed outright (SIGKILL, a lost node) is removed by the next save to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of saves to ``path`` whose process is gone."""
    for tmp in path.parent.glob(glob.escape(path.name) + ".*.*.tmp"):
        pid = tmp.name[len(path.name) + 1:].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def save_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group=None, **extra) -> None:
    """Write ``model`` and ``optimizer`` state (and ``extra``) to ``path`` from rank 0; all ranks wait for it."""
    if not _distributed() or dist.get_rank(group) == 0:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}, path)
    if _distributed():
        dist.barrier(group=group)


def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Optional[dict]:
    """Restore ``model`` and ``optimizer`` from ``path`` if it exists; returns the checkpoint (None if none).

    Everything is checked before anything is loaded (the file, the model's keys and shapes, the optimizer's state as
    its ``load_state_dict`` checks it): a refused checkpoint raises ValueError naming the file and what is wrong,
    and leaves the model and the optimizer as they were.
    """
    path = Path(path)
    if not path.exists():
        return None
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001  (empty, truncated, not a torch file, unsafe types: all unreadable)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "the file is empty or cut short"
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {detail})") from err
    if not isinstance(state, dict) or not {"model", "optimizer"} <= set(state):
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a checkpoint of save_checkpoint (a dict with 'model' and 'optimizer'), it "
                         f"holds {keys}; a file of model weights alone loads with "
                         f"model.load_state_dict(torch.load(path))")
    try:
        _check_model_state(state["model"], model)
        check = getattr(optimizer, "_check_state_dict", None)  # the perturbation optimizers check all of it
        if check is not None:
            check(state["optimizer"])
        else:
            _check_optimizer_groups(state["optimizer"], optimizer)
    except ValueError as err:
        raise ValueError(f"{path} does not fit this model and optimizer: {err}") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def _check_model_state(saved, model: torch.nn.Module) -> None:
    own = model.state_dict()
    if not isinstance(saved, dict):
        raise ValueError(f"its 'model' entry is a {type(saved).__name__}, not a state_dict")
    missing, extra = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or extra:
        raise ValueError(f"the model's state lacks {missing or 'nothing'} and has unexpected {extra or 'nothing'} "
                         f"(saved from another model?)")
    for key, value in own.items():
        other = saved[key]
        if not isinstance(other, torch.Tensor) or other.shape != value.shape:
            shape = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            raise ValueError(f"{key} has shape {shape} in the checkpoint, {tuple(value.shape)} in the model")


def _check_optimizer_groups(saved, optimizer: torch.optim.Optimizer) -> None:
    """What ``torch.optim.Optimizer.load_state_dict`` checks, here before the model is loaded."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise ValueError(f"the optimizer's state has {len(groups) if isinstance(groups, list) else 'no'} param "
                         f"groups, {type(optimizer).__name__} {len(optimizer.param_groups)}")
    for i, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        if not isinstance(group, dict) or len(group.get("params", ())) != len(own["params"]):
            raise ValueError(f"param group {i} of the optimizer's state does not hold {len(own['params'])} "
                             f"parameters")
