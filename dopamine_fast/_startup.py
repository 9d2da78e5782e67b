"""The command line's first seconds: a Ctrl-C (or SIGTERM) while torch loads ends it with one line, not a traceback.

The package's ``__init__`` imports this module before anything heavy. Only when the process is the command line
(``dopamine-fast`` or ``python -m dopamine_fast``) does it install the handlers; ``cli.main`` hands the signals
back (``hand_over``) as soon as it runs and catches them itself. Imported as a library, it changes nothing.
"""

from __future__ import annotations

import os
import signal
import sys

# Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (SIGTERM ends the command line alike).
INTERRUPTED = 130


def _started_as_cli() -> bool:
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    if name.startswith("dopamine-fast"):
        return True
    orig = getattr(sys, "orig_argv", [])  # Python >= 3.10; while -m locates the module, sys.argv[0] is "-m"
    return name == "-m" and "-m" in orig and orig[orig.index("-m") + 1:][:1] == ["dopamine_fast"]


def _interrupted(signum, frame) -> None:
    print("interrupted", file=sys.stderr, flush=True)
    raise SystemExit(INTERRUPTED)  # exits quietly, even from inside an import


def hand_over() -> None:
    """From here the command line handles the signals itself (Ctrl-C raises KeyboardInterrupt)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is _interrupted:
            signal.signal(signum, signal.default_int_handler)


if _started_as_cli():
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
