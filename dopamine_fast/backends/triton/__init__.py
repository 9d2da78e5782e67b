"""The Triton backend: its kernels, one module per op (``noise``, ``perturb``, ``perturbed_linear``,
``perturbed_rnn``, ``rpe_update``) with their shared pieces (``philox``: the generator and the member numbering;
``common``: tiles, the perturbed matmul, the epilogue), and here whether they can run (on a CUDA device, or on
the CPU under ``TRITON_INTERPRET=1``).

Each kernel module has a plain launcher function named like the op, with the op's signature; ``ops/specs.py``
imports it into the op's spec. The launchers are not ops of their own: the public op is one opaque node under
``torch.compile`` whichever backend runs inside it. Importing this package imports no kernel (nor Triton).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch

from ..registry import log


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


def import_failed(err: ImportError) -> None:
    """Say why the kernels could not be imported (a Triton too old for them), unless Triton is not installed at all:
    the other backends serve either way."""
    if importable():
        log.warning("dopamine_fast: no Triton backend: %s", err)
