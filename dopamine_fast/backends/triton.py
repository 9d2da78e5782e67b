"""Triton kernels: whether they can run here (on a CUDA device, or on the CPU under ``TRITON_INTERPRET=1``), and
each op's launcher, a plain function named like the op in ``dopamine_fast/ops/<spec.triton>.py``.

The launchers are not ops of their own: the public op is one opaque node under ``torch.compile`` whichever backend
runs inside it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable, Optional

import torch

from .registry import log


def importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def status() -> Optional[str]:
    """None when Triton kernels can run on some device here, else why not."""
    if not importable():
        return "triton is not installed"
    if not (torch.cuda.is_available() or interpreted()):
        return "no CUDA device and TRITON_INTERPRET is not set"
    return None


def launcher(spec) -> Optional[Callable]:
    """The Triton launcher of ``spec``'s op, or None when it has none or Triton is not installed."""
    if spec.triton is None or not importable():
        return None
    try:
        module = importlib.import_module(f"dopamine_fast.ops.{spec.triton}")
    except ImportError as err:  # e.g. a Triton too old for the kernels: the other backends serve
        log.warning("dopamine_fast: no Triton backend for %s: %s", spec.name, err)
        return None
    return getattr(module, spec.name)
