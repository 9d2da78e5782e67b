"""Whether Triton kernels can run here: on a CUDA device, or on the CPU under ``TRITON_INTERPRET=1``."""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch


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
