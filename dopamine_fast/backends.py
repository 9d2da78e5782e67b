"""Backend registry: one op, several implementations, chosen by device and availability.

Order of preference: ``cuda`` > ``triton`` > ``cpp`` > ``reference``. Triton serves CPU tensors only when forced
(its interpreter, ``TRITON_INTERPRET=1``, is for tests, not speed). ``DOPAMINE_FAST_BACKEND`` (or
``use_backend``) forces one backend for every op; forcing one that cannot serve a call raises instead of
silently falling back, so a test never checks the reference against itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

log = logging.getLogger("dopamine_fast")

BACKEND_ENV = "DOPAMINE_FAST_BACKEND"
ORDER = ("cuda", "triton", "cpp", "reference")


@dataclass(frozen=True)
class Impl:
    fn: Callable
    device_types: Tuple[str, ...]  # device types it serves; () means any
    auto_device_types: Tuple[str, ...]  # those it is chosen for without being forced
    available: Callable[[], Optional[str]]  # None when usable, else why not


_REGISTRY: Dict[str, Dict[str, Impl]] = {}
_forced: Optional[str] = None
_announced: set = set()


def _always() -> Optional[str]:
    return None


def register(op: str, backend: str, fn: Callable, device_types=(), auto_device_types=None,
             available: Callable[[], Optional[str]] = _always) -> None:
    """Register ``fn`` as ``backend``'s implementation of ``op``."""
    if backend not in ORDER:
        raise ValueError(f"backend must be one of {ORDER}, got {backend!r}")
    auto = tuple(device_types) if auto_device_types is None else tuple(auto_device_types)
    _REGISTRY.setdefault(op, {})[backend] = Impl(fn, tuple(device_types), auto, available)


def _serves(impl: Impl, device_type: str, forced: bool) -> bool:
    types = impl.device_types if forced else impl.auto_device_types
    return not impl.device_types or device_type in types


def forced_backend() -> Optional[str]:
    name = _forced or os.environ.get(BACKEND_ENV, "").strip().lower() or None
    if name in (None, "auto"):
        return None
    if name not in ORDER:
        raise ValueError(f"{BACKEND_ENV} must be one of {ORDER} or 'auto', got {name!r}")
    return name


def select(op: str, device) -> str:
    """Name of the backend that runs ``op`` on ``device``."""
    impls = _REGISTRY.get(op)
    if not impls:
        raise KeyError(f"unknown op {op!r}; registered: {sorted(_REGISTRY)}")
    device_type = torch.device(device).type
    forced = forced_backend()
    if forced is not None:
        impl = impls.get(forced)
        why = None if impl else f"{op!r} has no {forced} implementation"
        if impl and not _serves(impl, device_type, True):
            why = f"the {forced} backend of {op!r} does not run on {device_type} tensors"
        if impl and why is None:
            why = impl.available()
        if why:
            raise RuntimeError(f"backend {forced!r} was forced ({BACKEND_ENV} / use_backend) but {why}")
        chosen = forced
    else:
        chosen = next(name for name in ORDER if name in impls and _serves(impls[name], device_type, False)
                      and impls[name].available() is None)
    key = (op, device_type, chosen)
    if key not in _announced:
        _announced.add(key)
        log.info("dopamine_fast: %s on %s runs on the %s backend", op, device_type, chosen)
    return chosen


def dispatch(op: str, device) -> Callable:
    """The implementation of ``op`` for tensors on ``device``."""
    return _REGISTRY[op][select(op, device)].fn


def implementation(op: str, backend: str) -> Callable:
    """A named backend's implementation, for tests and benchmarks that compare backends side by side."""
    impl = _REGISTRY[op].get(backend)
    if impl is None:
        raise KeyError(f"{op!r} has no {backend} implementation")
    return impl.fn


def available_backends(op: str, device) -> list:
    """Backends that can run ``op`` on ``device`` here, forced or not, in order of preference."""
    device_type = torch.device(device).type
    return [name for name in ORDER if name in _REGISTRY.get(op, {})
            and _serves(_REGISTRY[op][name], device_type, True) and _REGISTRY[op][name].available() is None]


@contextlib.contextmanager
def use_backend(name: Optional[str]):
    """Force ``name`` (or ``None``/'auto' for automatic choice) for every op inside the block."""
    global _forced
    previous = _forced
    _forced = name
    try:
        forced_backend()  # validates the name
        yield
    finally:
        _forced = previous


def backend_info() -> Dict[str, Dict[str, str]]:
    """Which backend each op uses on each device type present: ``{op: {device_type: backend}}``."""
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info = {}
    for op in sorted(_REGISTRY):
        info[op] = {}
        for dt in device_types:
            try:
                info[op][dt] = select(op, dt)
            except RuntimeError as err:
                info[op][dt] = f"unavailable: {err}"
    return info
