"""Peak memory of a run or of one call: device memory on CUDA, resident set growth on the CPU.

The one meter of the package and of the benchmarks (``bench/common.py::peak_memory_mb`` runs one call under it).
It counts the peak above what was live when the meter was made, inside ``with meter.active():`` blocks only:

- CUDA: ``torch.cuda.max_memory_allocated`` (reset at the start of each block) minus ``memory_allocated`` at
  construction: the caching allocator's peak of live tensors.
- CPU: the process's resident set at its high-water mark. Where the kernel lets the mark be reset
  (``/proc/self/clear_refs``, Linux), it is reset at the start of each block and read back (``VmHWM``) at its
  end, which sees every allocation, torch's or a library's, however short. Elsewhere a thread samples the
  resident set while a block runs (a spike shorter than the sampling interval can be missed).

``tracemalloc`` and ``resource.ru_maxrss`` do not fit: the first misses tensors (torch allocates outside Python's
allocator), the second is a process-wide high-water mark that earlier runs in the same process already set (it is
only the last resort where there is no procfs). Freed heap memory is handed back to the OS first
(``malloc_trim``) so the baseline is what is live now, not what earlier runs left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from typing import Optional

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # no procfs (macOS): fall back to the high-water mark, which only ever grows
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kb(field: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_high_water() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) of this process; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at construction, counted only inside ``with meter.active():`` blocks."""

    def __init__(self, device, interval_s: float = 0.002):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            self.baseline = _rss_bytes()

    @property
    def peak_mb(self) -> float:
        return max(self.peak - self.baseline, 0) / 2 ** 20

    @contextlib.contextmanager
    def active(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                yield
            finally:
                torch.cuda.synchronize(self.device)
                self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
            return
        if _status_kb("VmHWM") is not None and _reset_rss_high_water():
            try:
                yield
            finally:
                self.peak = max(self.peak, _status_kb("VmHWM") * 1024)
            return
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(self.interval_s)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak = max(self.peak, _rss_bytes())
