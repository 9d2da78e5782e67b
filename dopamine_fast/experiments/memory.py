"""Peak training memory of a run: device memory on CUDA, resident set growth on the CPU.

``tracemalloc`` and ``resource.ru_maxrss`` do not fit: the first misses tensors (torch allocates outside Python's
allocator), the second is a process-wide high-water mark that earlier runs in the same process already set. On
the CPU a thread samples the resident set size while the meter is active; freed heap memory is handed back to
the OS first (``malloc_trim``) so the baseline is what is live now, not what earlier runs left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # no procfs (macOS): fall back to the high-water mark, which only ever grows
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
