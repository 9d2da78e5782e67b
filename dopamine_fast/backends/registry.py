"""Backend registry: one op, several implementations, chosen by device and availability.

Order of preference: ``cuda`` > ``triton`` > ``cpp`` > ``reference``, except where a GPU measured otherwise
(``OP_ORDER``). Triton serves CPU tensors only when forced
(its interpreter, ``TRITON_INTERPRET=1``, is for tests, not speed). ``DOPAMINE_FAST_BACKEND`` (or
``use_backend``) forces one backend for every op; forcing one that cannot serve a call raises instead of
silently falling back, so a test never checks the reference against itself.

The choice is cached per (op, device type, forced name), so a call costs a dictionary look-up, not the
availability checks: ``use_backend`` and the environment variable are part of the key, ``register`` empties the
cache, and ``clear_cache()`` does so for anything else that changes availability. ``use_backend`` is
context-local (``contextvars``): a block in one thread or asyncio task does not force another's backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

log = logging.getLogger("dopamine_fast")

BACKEND_ENV = "DOPAMINE_FAST_BACKEND"
ORDER = ("cuda", "triton", "cpp", "reference")
# Measured on an NVIDIA H200 (bench/results/gpu/h200/backend_choice.csv, `bash bench/gpu/run.sh`): Triton's
# perturbed_linear took 0.84x the CUDA kernel's time (geometric mean of 16 cases, faster in 12), and the whole fused
# population path, which calls it, 0.94x (faster in 10 of 12). CUDA kept noise_ (Triton 1.25x its time),
# perturbed_rnn (1.32x) and rpe_update_ (1.44x).
OP_ORDER = {"perturbed_linear": ("triton", "cuda", "cpp", "reference")}


def order(op: str) -> Tuple[str, ...]:
    """The backends of ``op`` in order of preference."""
    return OP_ORDER.get(op, ORDER)


@dataclass(frozen=True)
class Impl:
    fn: Callable
    device_types: Tuple[str, ...]  # device types it serves; () means any
    auto_device_types: Tuple[str, ...]  # those it is chosen for without being forced
    available: Callable[[], Optional[str]]  # None when usable, else why not


_REGISTRY: Dict[str, Dict[str, Impl]] = {}
# The open use_backend blocks of this context, innermost last, each as (its own token, name). Each block removes
# its own entry on exit, so blocks left in any order never leave a name forced behind them.
_blocks: contextvars.ContextVar[Tuple[Tuple[object, Optional[str]], ...]] = contextvars.ContextVar(
    "dopamine_fast_use_backend", default=())
# (op, device type, _forced_key()) -> implementation
_chosen: Dict[Tuple[str, str, Optional[str]], Callable] = {}
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
    clear_cache()


def clear_cache() -> None:
    """Forget every cached choice: call it when a backend's availability changes (tests faking a device)."""
    _chosen.clear()


def _serves(impl: Impl, device_type: str, forced: bool) -> bool:
    types = impl.device_types if forced else impl.auto_device_types
    return not impl.device_types or device_type in types


# os.environ.get raises and catches a KeyError inside when the variable is unset (about 1 us a call); the mapping
# behind os.environ, which its setters keep in step, answers in a tenth of that.
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(BACKEND_ENV) if hasattr(os.environ, "encodekey") else BACKEND_ENV


def _forced_key():
    """What decides the forced backend, cheaply: the innermost ``use_backend`` name of this context, else the
    environment variable's raw value (not validated: only a cache key)."""
    blocks = _blocks.get()
    if blocks:
        return blocks[-1][1]
    return _ENV_DATA.get(_ENV_KEY) if _ENV_DATA is not None else os.environ.get(BACKEND_ENV)


def forced_backend() -> Optional[str]:
    blocks = _blocks.get()
    name = blocks[-1][1] if blocks else os.environ.get(BACKEND_ENV)
    name = (name or "").strip().lower() or None
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
        passed_over = {}
    else:
        chosen, passed_over = _first_available(op, impls, device_type)
    key = (op, device_type, chosen)
    if key not in _announced:
        _announced.add(key)
        # A GPU whose preferred kernels cannot run (no kernel image for it, ...) deserves more than a note.
        level = logging.WARNING if device_type == "cuda" and passed_over else logging.INFO
        log.log(level, "dopamine_fast: %s on %s runs on the %s backend%s", op, device_type, chosen,
                "".join(f"; {name} unavailable: {why}" for name, why in passed_over.items()))
    return chosen


def _first_available(op: str, impls: Dict[str, Impl], device_type: str) -> Tuple[str, Dict[str, str]]:
    """The automatic choice, and why each backend preferred to it cannot run here."""
    passed_over = {}
    for name in order(op):
        if name in impls and _serves(impls[name], device_type, False):
            why = impls[name].available()
            if why is None:
                return name, passed_over
            passed_over[name] = why
    raise RuntimeError(f"no backend can run on {device_type} tensors: {passed_over}")


def dispatch(op: str, device) -> Callable:
    """The implementation of ``op`` for tensors on ``device`` (cached: see the module's docstring)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    key = (op, device_type, _forced_key())
    fn = _chosen.get(key)
    if fn is None:
        # Failures (a forced backend that cannot run) are not cached: they raise on every call.
        fn = _chosen[key] = _REGISTRY[op][select(op, device_type)].fn
    return fn


def implementation(op: str, backend: str) -> Callable:
    """A named backend's implementation, for tests and benchmarks that compare backends side by side."""
    impl = _REGISTRY[op].get(backend)
    if impl is None:
        raise KeyError(f"{op!r} has no {backend} implementation")
    return impl.fn


def available_backends(op: str, device) -> list:
    """Backends that can run ``op`` on ``device`` here, forced or not, in order of preference."""
    device_type = torch.device(device).type
    return [name for name in order(op) if name in _REGISTRY.get(op, {})
            and _serves(_REGISTRY[op][name], device_type, True) and _REGISTRY[op][name].available() is None]


@contextlib.contextmanager
def use_backend(name: Optional[str]):
    """Force ``name`` ('auto' for the automatic choice) for every op inside the block; ``None`` leaves the choice
    as it is (an enclosing block's, else the environment's).

    Context-local: other threads and asyncio tasks keep their own choice. Nested blocks may exit in any order.
    """
    if name is None:
        yield
        return
    mine = (object(), name)
    _blocks.set(_blocks.get() + (mine,))
    try:
        forced_backend()  # validates the name
        yield
    finally:
        _blocks.set(tuple(b for b in _blocks.get() if b is not mine))


def backend_info(explain: bool = False) -> Dict[str, Dict[str, str]]:
    """Which backend each op uses on each device type present: ``{op: {device_type: backend}}``.

    ``explain=True`` adds why each backend preferred to the chosen one cannot run (e.g. a GPU the CUDA kernels
    were not built for): ``"triton (cuda unavailable: ...)"``.
    """
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info = {}
    for op in sorted(_REGISTRY):
        info[op] = {}
        for dt in device_types:
            try:
                info[op][dt] = select(op, dt)
            except RuntimeError as err:
                info[op][dt] = f"unavailable: {err}"
                continue
            if explain and forced_backend() is None:
                passed_over = _first_available(op, _REGISTRY[op], dt)[1]
                info[op][dt] += "".join(f" ({name} unavailable: {why})" for name, why in passed_over.items())
    return info
