"""Whether a process still runs: the owners of lock files and temporary files, which a killed one leaves behind."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True when a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True
