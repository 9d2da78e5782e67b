"""The compiled kernels (``dopamine_fast._C``), if they were built; the package works without them.

Importing ``_C`` registers its CPU and CUDA kernels (``TORCH_LIBRARY_IMPL`` in ``csrc/``) for ops of the
``dopamine_fast_C`` namespace; the schemas of those ops are defined here, by ``define``, from the same spec as the
public op. The dispatcher checks each kernel's C++ signature against that schema: a mismatch (a stale build) makes
the op's compiled backend unavailable, with the reason, instead of a wrong call. The kernels check no arguments
(the public op does, ``ops/validation.py``): a direct call of ``torch.ops.dopamine_fast_C.<op>`` is unchecked.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from types import ModuleType
from typing import Dict, Iterable, Optional, Tuple

import torch

from .registry import log

NO_NATIVE_ENV = "DOPAMINE_FAST_NO_NATIVE"
NAMESPACE = "dopamine_fast_C"

_load_error: Optional[str] = None
if os.environ.get(NO_NATIVE_ENV, "") not in ("", "0"):
    _load_error = f"disabled by {NO_NATIVE_ENV}"
else:
    try:
        from .. import _C  # noqa: F401  (importing it registers the kernels)
    except ImportError as err:
        _load_error = f"dopamine_fast._C is not built ({err})"

_lib: Optional[torch.library.Library] = None
_define_errors: Dict[str, str] = {}  # op -> why its schema could not be defined


def load_error() -> Optional[str]:
    """Why the native module is not in use, or None when it is."""
    return _load_error


def _has_kernel(op: str, dispatch_key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", dispatch_key)


def define(spec):
    """Define ``dopamine_fast_C::<op>`` from ``spec`` (schema and fake kernel) and return the op, or None when the
    compiled kernels do not match the schema (``status`` then says why)."""
    global _lib
    try:
        if _lib is None:
            _lib = torch.library.Library(NAMESPACE, "DEF")
        _lib.define(spec.name + spec.schema)
    except RuntimeError as err:
        # A module built from other sources: a kernel whose signature differs, or schemas defined in C++.
        _define_errors[spec.name] = (f"dopamine_fast._C does not match the schema of {spec.name} (rebuild it: "
                                     f"pip install --no-build-isolation -e .): {str(err).splitlines()[0]}")
        log.warning("dopamine_fast: %s", _define_errors[spec.name])
        return None
    torch.library.register_fake(f"{NAMESPACE}::{spec.name}", spec.checked_fake, lib=_lib)
    return getattr(getattr(torch.ops, NAMESPACE), spec.name).default


def status(op: str, dispatch_key: str) -> Optional[str]:
    """None when ``op`` has a compiled kernel for ``dispatch_key`` ('CPU' or 'CUDA'), else why not."""
    if _load_error is not None:
        return _load_error
    if op in _define_errors:
        return _define_errors[op]
    if not _has_kernel(op, dispatch_key):
        return f"dopamine_fast._C has no {dispatch_key} kernel for {op}"
    if dispatch_key == "CUDA":
        if not torch.cuda.is_available():
            return "no CUDA device"
        return _device_image_problem(torch.cuda.current_device())
    return None


def _build_record() -> Optional[ModuleType]:
    """What the build (CMakeLists.txt) recorded beside the module (``dopamine_fast/_build_config.py``), or None."""
    try:
        return importlib.import_module("dopamine_fast._build_config")
    except ImportError:
        return None


def built_cuda_arch_list() -> Optional[str]:
    """The TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for (the build records it), or None if unknown."""
    record = _build_record()
    return None if record is None else record.CUDA_ARCH_LIST


def build_summary() -> str:
    """One line on what was built: the CUDA targets and toolkit, CPU kernels only, or no record (for the setup and
    GPU scripts' logs)."""
    record = _build_record()
    if record is None:
        return "no record of a native build (dopamine_fast/_build_config.py is missing)"
    if not record.CUDA_ARCH_LIST:
        return f"CPU kernels only (no CUDA kernels: {getattr(record, 'NO_CUDA_REASON', None) or 'not built'})"
    return f"CUDA kernels for {record.CUDA_ARCH_LIST}, toolkit {getattr(record, 'CUDA_HOME', None)}"


def parse_arch_list(arch_list: str) -> Iterable[Tuple[int, int, str, bool]]:
    """``(major, minor, suffix, ptx)`` of each entry of a TORCH_CUDA_ARCH_LIST ("8.0;8.6 9.0a;9.0+PTX")."""
    for entry in re.split(r"[;\s,]+", arch_list.strip()):
        found = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)(\+PTX)?", entry, re.IGNORECASE)
        if found:
            yield int(found[1]), int(found[2]), found[3].lower(), bool(found[4])


def image_problem(capability: Tuple[int, int], arch_list: Optional[str]) -> Optional[str]:
    """None when kernels built for ``arch_list`` run on a device of compute ``capability``, else why not.

    A cubin for X.Y runs on X.y with y >= Y (an arch-specific "9.0a" only on 9.0 itself); PTX for X.Y is compiled
    by the driver for any X.Y or newer. An unknown or unreadable list (named architectures) is not held against
    the device.
    """
    entries = list(parse_arch_list(arch_list or ""))
    if not entries:
        return None
    major, minor = capability
    for a_major, a_minor, suffix, ptx in entries:
        if a_major == major and (a_minor == minor or (not suffix and a_minor < minor)):
            return None
        if ptx and not suffix and (a_major, a_minor) <= (major, minor):
            return None
    return (f"dopamine_fast._C has no kernel image for this GPU (compute capability {major}.{minor}); it was "
            f"built for TORCH_CUDA_ARCH_LIST={arch_list!r}: rebuild on this machine, or with "
            f"TORCH_CUDA_ARCH_LIST={major}.{minor}")


@functools.lru_cache(maxsize=None)
def _device_image_problem(index: int) -> Optional[str]:
    return image_problem(torch.cuda.get_device_capability(index), built_cuda_arch_list())
