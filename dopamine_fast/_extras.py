"""The optional ``experiments`` extra: what needs it, and the one error that says how to install it.

The core (optimizers, populations, ops, the XOR tasks) needs torch only. The experiments' plots (matplotlib),
progress bars (tqdm) and the chaotic tasks (numpy) import their module here, at the point of use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "experiments"
INSTALL = f"pip install 'dopamine-fast[{EXTRA}]'"


class MissingExtra(ImportError):
    """A module of an optional extra is not installed; the message names what needs it and what to install."""


def require(module: str, needed_by: str) -> ModuleType:
    """Import and return ``module``, or raise ``MissingExtra``: "<needed_by> need <module>: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        # The module is there but one of its own imports failed: say which, for the broken installation.
        cause = "" if err.name in (top, module) else f" ({err})"
        raise MissingExtra(f"{needed_by} need {top}{cause}: {INSTALL}", name=top) from err
