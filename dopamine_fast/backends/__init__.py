"""Which implementation runs each op, and the loaders of the kernels behind them.

- ``registry``: the backends of each op, the automatic choice (cached), ``use_backend`` and
  ``DOPAMINE_FAST_BACKEND``.
- ``native``: the compiled kernels (``dopamine_fast._C``, ops ``dopamine_fast_C::*``); their schemas are defined
  here, from the same spec as the public op, and C++ only registers per-device implementations.
- ``triton``: the Triton kernels, one module per op, and whether they can run here.

``register_op`` wires one op spec (``dopamine_fast/ops/specs.py``) to every backend that implements it.
"""

from __future__ import annotations

from . import native, triton
from .registry import (BACKEND_ENV, ORDER, available_backends, backend_info, clear_cache, dispatch, forced_backend,
                       implementation, register, select, use_backend)


def register_op(spec):
    """Register the reference of ``spec`` and each kernel that implements it here."""
    register(spec.name, "reference", spec.reference)
    if native.load_error() is None:
        kernel = native.define(spec)  # None when _C does not match the schema: status() then says so
        register(spec.name, "cpp", kernel, device_types=("cpu",), available=lambda: native.status(spec.name, "CPU"))
        register(spec.name, "cuda", kernel, device_types=("cuda",),
                 available=lambda: native.status(spec.name, "CUDA"))
    if spec.triton is not None:
        # CPU tensors only through the interpreter (tests); compiled Triton needs a GPU.
        devices = ("cuda", "cpu") if triton.interpreted() else ("cuda",)
        register(spec.name, "triton", spec.triton, device_types=devices, auto_device_types=("cuda",),
                 available=triton.status)


__all__ = ["BACKEND_ENV", "ORDER", "available_backends", "backend_info", "clear_cache", "dispatch", "forced_backend",
           "implementation", "register", "register_op", "select", "use_backend", "native", "triton"]
