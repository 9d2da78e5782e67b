"""Keeping a run's work as it goes: CSV rows written as they are logged, and a Ctrl-C that stops at the next step."""

from __future__ import annotations

import csv
import signal
import threading
from pathlib import Path
from typing import Dict, Optional


class CsvRows:
    """Appends rows to a CSV file, each flushed at once; the header comes from the first row.

    An interrupted or crashed run leaves every row logged so far on disk. Keys a later row adds (none, for the
    curves of one task) are dropped rather than breaking the columns.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._writer: Optional[csv.DictWriter] = None

    def __call__(self, row: Dict[str, object]) -> None:
        if self._writer is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StopOnInterrupt:
    """Inside the block the first Ctrl-C (SIGINT) only asks to stop (``stop()`` turns True); a second one
    interrupts at once, as usual. Outside the main thread signals cannot be caught and Ctrl-C acts as usual."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
