"""Registers Triton launchers as ``torch.library`` ops (namespace ``dopamine_fast_triton``) and launches kernels.

Compiled (a GPU): ``torch.library.triton_op`` with ``wrap_triton`` launches, so ``torch.compile`` traces into the
launcher and sees the kernels. Interpreted (``TRITON_INTERPRET=1``, CPU tensors): ``triton_op`` would trace the
launcher on fake tensors and hand them to the interpreter, which reads their data; there the launcher is a
``torch.library.custom_op`` (opaque to the compiler) whose fake kernel is the same launcher with launches skipped.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake

from .. import _triton_support

NAMESPACE = "dopamine_fast_triton"


def triton_library_op(name: str, mutates_args):
    """Decorator: register ``fn`` (type-annotated: the schema is inferred) as ``dopamine_fast_triton::<name>``."""

    def register(fn):
        qualname = f"{NAMESPACE}::{name}"
        if _triton_support.interpreted():
            op = torch.library.custom_op(qualname, fn, mutates_args=mutates_args)
            op.register_fake(fn)
            return op
        return torch.library.triton_op(qualname, fn, mutates_args=mutates_args)

    return register


def launch(kernel, grid, *args, **meta) -> None:
    """``kernel[grid](*args, **meta)``, traceable by ``torch.compile``; under the interpreter, nothing on fakes."""
    if _triton_support.interpreted():
        if not any(isinstance(a, torch.Tensor) and is_fake(a) for a in args):
            kernel[grid](*args, **meta)
        return
    torch.library.wrap_triton(kernel)[grid](*args, **meta)
