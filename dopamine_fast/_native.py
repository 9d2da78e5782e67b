"""Loads the compiled kernels (``dopamine_fast._C``) if they were built; the package works without them."""

from __future__ import annotations

import os
from typing import Optional

import torch

NO_NATIVE_ENV = "DOPAMINE_FAST_NO_NATIVE"
NAMESPACE = "dopamine_fast_C"

_load_error: Optional[str] = None
if os.environ.get(NO_NATIVE_ENV, "") not in ("", "0"):
    _load_error = f"disabled by {NO_NATIVE_ENV}"
else:
    try:
        from . import _C  # noqa: F401  (importing it registers the dopamine_fast_C ops)
    except ImportError as err:
        _load_error = f"dopamine_fast._C is not built ({err})"

_fake_lib = None


def load_error() -> Optional[str]:
    """Why the native module is not in use, or None when it is."""
    return _load_error


def _has_kernel(op: str, dispatch_key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", dispatch_key)


def native_op(op: str):
    """The compiled op ``dopamine_fast_C::<op>``, or None when it is not there."""
    if _load_error is not None or not hasattr(getattr(torch.ops, NAMESPACE), op):
        return None
    return getattr(getattr(torch.ops, NAMESPACE), op).default


def status(op: str, dispatch_key: str) -> Optional[str]:
    """None when ``op`` has a compiled kernel for ``dispatch_key`` ('CPU' or 'CUDA'), else why not."""
    if _load_error is not None:
        return _load_error
    if not _has_kernel(op, dispatch_key):
        return f"dopamine_fast._C has no {dispatch_key} kernel for {op}"
    if dispatch_key == "CUDA" and not torch.cuda.is_available():
        return "no CUDA device"
    return None


def fake_library():
    """The library fragment that holds the fake (meta) kernels of the native ops."""
    global _fake_lib
    if _fake_lib is None:
        _fake_lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    return _fake_lib
