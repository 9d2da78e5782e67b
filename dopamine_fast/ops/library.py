"""The public ops ``torch.ops.dopamine_fast.<name>``, defined from ``specs.SPECS``, and the eager fast path to them.

Each public op has one body for every device (CompositeExplicitAutograd) that asks ``dopamine_fast.backends`` for
the implementation (cached) and calls it; the fake kernel runs the op's checks, so ``torch.compile`` sees one
opaque node whichever backend runs.
"""

from __future__ import annotations

import torch

from .. import backends
from .specs import SPECS, OpSpec

_LIB = torch.library.Library("dopamine_fast", "DEF")
_BODIES = {}  # name -> the public op's body


def call(name: str, *args):
    """The public op, or in plain eager mode its body directly: the dispatcher's round trip into a Python kernel
    boxes every argument (3 to 8 us a call, more than a small kernel takes). Under torch.compile, a dispatch mode
    (make_fx, FakeTensorMode, export) or with arguments that are not tensors (an FX proxy), the op itself, so
    traced graphs hold the public op."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or not isinstance(args[SPECS[name].device_index], torch.Tensor)):
        return getattr(torch.ops.dopamine_fast, name)(*args)
    return _BODIES[name](*args)


def _define(spec: OpSpec) -> None:
    _LIB.define(spec.name + spec.schema)
    backends.register_op(spec)
    name, check, device_index = spec.name, spec.check, spec.device_index

    def run(*args):
        impl = backends.dispatch(name, args[device_index].device)
        check(*args)  # for every backend: compiled kernels keep internal asserts only (ops/validation.py)
        return impl(*args)

    _LIB.impl(name, run, "CompositeExplicitAutograd")
    _BODIES[name] = run
    torch.library.register_fake("dopamine_fast::" + name, spec.checked_fake, lib=_LIB)


for _spec in SPECS.values():
    _define(_spec)
