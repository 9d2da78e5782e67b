"""Keeping a run's work as it goes: CSV rows written as they are logged, and a Ctrl-C that stops at the next step."""

from __future__ import annotations

import csv
import os
import signal
import threading
from pathlib import Path
from typing import Dict, Optional

from .._pids import alive


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
    """Inside the block the first Ctrl-C (SIGINT) or SIGTERM only asks to stop (``stop()`` turns True); a second
    one interrupts at once (KeyboardInterrupt). Outside the main thread signals cannot be caught and act as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class FolderBusy(Exception):
    """Another live process holds the folder's lock; the message names it."""


class FolderLock:
    """A lock file (``.dopamine-fast.lock``, holding the writer's pid) while a run writes into a folder: a second
    run into the same folder is refused instead of interleaving its rows. A lock left by a process that is gone
    (killed outright) is taken over."""

    NAME = ".dopamine-fast.lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.NAME
        self._held = False

    def holder(self) -> Optional[int]:
        """The pid of the live process holding the lock, None when none does."""
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and alive(pid) else None

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = self.holder()
                if pid is not None:
                    raise FolderBusy(f"{self.path.parent} is being written by another run (pid {pid})") from None
                self.path.unlink(missing_ok=True)  # stale: its writer is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._held = True
            return self
        raise FolderBusy(f"{self.path.parent} is being written by another run (its lock {self.path} keeps coming "
                         f"back)")

    def __exit__(self, *exc) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False
