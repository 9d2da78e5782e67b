"""Steps atomic against Ctrl-C: SIGINT (and SIGTERM where a handler catches it) waits out a critical section.

A step that restores a member's weights or applies its update tensor by tensor must not stop halfway: the
weights would be left perturbed or half-updated. Inside ``deferred_interrupts()`` such a signal is recorded and
delivered to the handler it was meant for (Python's default raises ``KeyboardInterrupt``) when the block ends, or
at once where the block opens an interruptible stretch (``allowed()``, around a user's closure, whose effects the
caller undoes)::

    with deferred_interrupts() as interrupts:
        perturb(weights)
        try:
            with interrupts.allowed():
                loss = closure()
        finally:
            restore(weights)  # a Ctrl-C here waits until the block ends

Signal handlers can only be installed on the main thread; elsewhere the block changes nothing (there Ctrl-C never
arrives: Python delivers signals to the main thread).
"""

from __future__ import annotations

import _signal  # the C functions behind signal.signal, without its enum wrapping (~20 us a step on a small model)
import functools
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Dict, List

import torch


class _Deferral:
    def __init__(self):
        self.previous: Dict[int, Callable] = {}
        self.pending: List[int] = []
        self.open = False

    def handle(self, signum, frame) -> None:
        if self.open:  # an interruptible stretch: deliver now
            self._deliver(signum, frame)
        elif signum not in self.pending:
            self.pending.append(signum)

    def _deliver(self, signum, frame) -> None:
        self.open = False  # while the handler raises (KeyboardInterrupt), a further signal waits for the restore
        self.previous[signum](signum, frame)
        self.open = True  # it returned (a handler that only records the request): the stretch stays open

    @contextmanager
    def allowed(self):
        """Signals are delivered at once inside this block (those that arrived before it, on entering it)."""
        if not self.previous:
            yield
            return
        self.open = True
        try:
            while self.pending:
                self._deliver(self.pending.pop(0), None)
            yield
        finally:
            self.open = False


class _Nothing:
    @contextmanager
    def allowed(self):
        yield


def _deferrable(signum: int) -> bool:
    """A signal whose handler is Python code (SIGINT's default, a CLI's own); SIG_DFL and SIG_IGN stay as they are."""
    return callable(_signal.getsignal(signum))


@contextmanager
def deferred_interrupts():
    """Defer SIGINT and SIGTERM (where Python handlers catch them) to the end of the block; see the module doc."""
    if threading.current_thread() is not threading.main_thread():
        yield _Nothing()
        return
    deferral = _Deferral()
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if _deferrable(signum):
                deferral.previous[signum] = _signal.signal(signum, deferral.handle)
        yield deferral
    except BaseException:
        _restore(deferral)  # the block failed: that exception goes on, deferred signals add nothing to it
        raise
    _restore(deferral)
    for signum in deferral.pending:
        deferral.previous[signum](signum, None)


def _restore(deferral: _Deferral) -> None:
    for signum, handler in deferral.previous.items():
        _signal.signal(signum, handler)


def no_grad(fn: Callable) -> Callable:
    """``torch.no_grad()`` as a decorator that a Ctrl-C cannot leave switched on.

    ``torch.no_grad().__enter__`` turns grad mode off and then runs more Python code; an interrupt landing there
    escapes before the ``with`` block owns the mode, and grad mode stays off for the rest of the session. Here the
    mode is switched inside the ``try`` whose ``finally`` restores it, through the builtin
    ``torch._C._set_grad_enabled``: ``torch.set_grad_enabled(...)`` is a Python ``__init__``, at whose entry a
    pending Ctrl-C is raised before the mode is restored (CI saw it), while a builtin call runs to its end before
    Python looks at pending signals.
    """
    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        previous = torch.is_grad_enabled()
        try:
            torch._C._set_grad_enabled(False)
            return fn(*args, **kwargs)
        finally:
            torch._C._set_grad_enabled(previous)

    return without_grad


__all__ = ["deferred_interrupts", "no_grad"]
