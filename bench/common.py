"""Shared pieces of the benchmarks: arguments, timing, peak memory, the machine, CSV and plots.

Every ``bench/bench_*.py`` takes ``--device``, ``--out`` and ``--quick`` and writes ``<name>.csv`` and
``<name>.png`` under ``--out``; ``bench/summarize.py`` turns those into ``README.md``. Timings are medians of at
least five runs after a warm-up; a case that fails or runs over its budget becomes a row with a ``status``, so one
slow baseline or a missing backend never stops a suite.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch

# The benchmarks import the package from the checkout they sit in, installed or not.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dopamine_fast  # noqa: E402
from dopamine_fast import backends  # noqa: E402
from dopamine_fast.experiments.memory import PeakMemory  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results"
REPEATS = 5
# A measurement repeats a fast call until it lasts this long, so timer resolution and launch jitter do not dominate.
MIN_MEASURE_S = 0.02


def parse_args(description: str, budget_s: float = 120.0, cuda_budget_s: float = 60.0) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs larger sizes)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the CSV and the plot")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke runs")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"wall-clock budget of the script; cases left when it is spent are recorded as "
                             f"skipped (default {budget_s:g} on cpu, {cuda_budget_s:g} on cuda)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated kernel backends to run (default: every one the device has)")
    parser.add_argument("--cases", default=None,
                        help="population/step only: run just these cases, e.g. mlp256:32:1024,mlp256:1:1024 "
                             "(model:batch:K), instead of the device's grid")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out EvoTorch and evosax even where installed (their set-up and JIT take seconds)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (and, with 1, for JAX too); default: torch's own choice. On a "
                             "machine shared with other work, 1 thread gives steadier times")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    if args.budget_s is None:
        args.budget_s = cuda_budget_s if args.device.type == "cuda" else budget_s
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def _call(fn_job):
    fn, job = fn_job
    return fn(*job)


def run_jobs(fn: Callable, jobs: List[tuple], processes: int, on_done: Optional[Callable] = None) -> list:
    """``[fn(*job) for job in jobs]``, in ``processes`` spawned processes at once when more than one.

    ``on_done(result)`` sees each result as soon as it and those before it are done, so that a long run can keep
    what it has finished if it is stopped."""
    results = []
    if processes <= 1:
        stream = (fn(*job) for job in jobs)
        pool = None
    else:
        import multiprocessing
        pool = multiprocessing.get_context("spawn").Pool(min(processes, len(jobs)))
        stream = pool.imap(_call, [(fn, job) for job in jobs], chunksize=1)
    try:
        for result in stream:
            results.append(result)
            if on_done is not None:
                on_done(result)
    finally:
        if pool is not None:
            pool.terminate()
    return results


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    if n == 1:  # must be set before jax is first imported (peers.py imports it lazily)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def start(doc: str, bench: str, op: str, grids: dict, columns, derived, budget_s: float, cuda_budget_s: float):
    """The opening every op benchmark shares: arguments, this run's grid, the backends to time, a recorder."""
    args = parse_args(doc.splitlines()[0], budget_s=budget_s, cuda_budget_s=cuda_budget_s)
    grid = grids["quick" if args.quick else args.device.type]
    own = op if bench == op.rstrip("_") else None  # bench_<op>.py times its op; bench_step only uses the backends
    rec = Recorder(bench, args, columns, derived, op=own, title=doc.splitlines()[0].strip('"'))
    return args, grid, kernel_backends(op, args.device, args.backends), rec


def model_cases(spec: str) -> Dict[tuple, List[int]]:
    """``--cases`` "model:batch:K,..." as {(model, batch): [K, ...]} (the population and step grids' form)."""
    cases: Dict[tuple, List[int]] = {}
    for item in spec.split(","):
        try:
            model, batch, k = item.strip().split(":")
            cases.setdefault((model, int(batch)), []).append(int(k))
        except ValueError:
            raise SystemExit(f"--cases: expected model:batch:K items separated by commas, got {item!r}") from None
    return cases


def kernel_backends(op: str, device: torch.device, only: Optional[str] = None) -> List[str]:
    """Backends worth timing for ``op`` on ``device``: on the CPU, Triton would run its interpreter (a test tool)."""
    names = backends.available_backends(op, device)
    if device.type == "cpu":
        names = [n for n in names if n != "triton"]
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        names = [n for n in names if n in wanted]
    return names


def activation_cap_bytes(device: torch.device) -> int:
    """Largest activation tensor a case may need ([members, batch, width] floats); larger cases are skipped."""
    if device.type == "cuda":
        return int(0.2 * torch.cuda.get_device_properties(device).total_memory)
    return 2 * 2**30


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TooSlow(Exception):
    """The warm-up call alone took longer than a case may; its time is in ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__(f"one call took {seconds:.3g} s")
        self.seconds = seconds


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = REPEATS, warmup: int = 1,
              max_first_s: Optional[float] = None) -> Dict:
    """Median, min and max seconds of one call of ``fn`` over ``repeats`` measurements after ``warmup`` calls.

    Raises ``TooSlow`` without repeating when the last warm-up call takes longer than ``max_first_s`` (earlier
    ones may compile: Triton's first call of a kernel JIT-compiles it).
    """
    first = 0.0
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        synchronize(device)
        first = time.perf_counter() - start
        if max_first_s is not None and i == warmup - 1 and first > max_first_s:
            raise TooSlow(first)
    inner = max(1, min(1000, int(MIN_MEASURE_S / max(first, 1e-7))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) / inner)
    return {"time_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats,
            "calls_per_repeat": inner}


# -- peak memory -----------------------------------------------------------------------------------------------
def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Memory one call of ``fn`` needs above what is live before it, in MiB (the package's ``PeakMemory``).

    CUDA: the caching allocator's peak. CPU: the growth of the process's resident set at its high-water mark
    (the kernel's VmHWM, reset just before the call), which sees every allocation, torch's or a library's.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    meter = PeakMemory(device)
    with meter.active():
        fn()
    return meter.peak_mb


# -- the machine -----------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def module_version(module: str) -> Optional[str]:
    """Installed version of a distribution (without importing it), or None when it is not installed."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> Dict[str, object]:
    info = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine shows up here: timings taken under load are noisier and slower.
        "load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": module_version("triton"),
        "dopamine_fast": dopamine_fast.__version__,
        "native_module": dopamine_fast.backends.native.load_error() or "loaded",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "backends": {op: backends.available_backends(op, device) for op in dopamine_fast.ops.SPECS},
    }
    return info


def matmul_flops(device: torch.device, dtype=torch.float32) -> Dict[str, float]:
    """FLOP/s of one large square matrix multiply on ``device``: the yardstick for the kernels' FLOP/s."""
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_call(lambda: torch.mm(a, b), device)["time_s"]
    return {"n": n, "time_s": t, "flops": 2 * n**3 / t}


def noise_rates(device: torch.device, names: Iterable[str]) -> Dict[str, float]:
    """Normals per second of each backend's generator: estimates a noise-bound case's time before running it."""
    rates = {}
    for name in names:
        with dopamine_fast.use_backend(name):
            t = time_call(lambda: dopamine_fast.ops.noise(3, 0, 0, 0, 8, 1 << 16, device=device), device, repeats=1)
        rates[name] = 8 * (1 << 16) / t["time_s"]
    return rates


# -- one script's results --------------------------------------------------------------------------------------
class Recorder:
    """Runs the cases of one benchmark script and collects a row per case.

    ``measure(series, fn, work=..., **fields)`` times ``fn`` and its peak memory (a callable field is called after
    the timing, for what the calls found out). Cases of one ``series`` come in
    growing sizes; ``work`` is a number proportional to a case's cost, so the time of the last case of the series
    predicts the next one, and a case predicted (or estimated by the caller, ``estimate_s``) to take more than
    ``slow_s`` per call is recorded as skipped instead of run. Once the script's budget is spent every case left is
    skipped; errors (a backend that cannot run a case, out of memory) become rows too and end their series.
    """

    def __init__(self, name: str, args: argparse.Namespace, columns: Iterable[str], derived: Iterable[str] = (),
                 slow_s: float = 1.0, op: Optional[str] = None, title: Optional[str] = None):
        self.name, self.args = name, args
        self.op, self.title = op, title  # the op of an op's benchmark: the summaries find those by it
        self.device = args.device
        self.columns = ["bench", "device"] + list(columns) + ["time_s", "min_s", "max_s", "repeats",
                                                             "peak_mb", "status"] + list(derived)
        self.rows: List[Dict] = []
        self.slow_s = slow_s
        self.failed: Dict[tuple, str] = {}
        self.last: Dict[tuple, tuple] = {}  # series -> (seconds per call, work) of its last case
        self.deadline = time.perf_counter() + args.budget_s
        self.started = time.perf_counter()

    def _row(self, fields: Dict, **extra) -> Dict:
        row = {"bench": self.name, "device": str(self.device), **fields, **extra}
        self.rows.append(row)
        self._write_csv()  # as it goes, so a script killed by an outer timeout still leaves its rows
        return row

    def record(self, timing: Dict, peak_mb: float = float("nan"), **fields) -> Dict:
        """A row timed by the caller (``timing`` as ``time_call`` returns it)."""
        return self._row(fields, **timing, peak_mb=peak_mb, status="ok")

    def too_large(self, activation_bytes: float, **fields) -> bool:
        """Record the case as skipped (True) when its activations alone exceed ``activation_cap_bytes``."""
        cap = activation_cap_bytes(self.device)
        if activation_bytes <= cap:
            return False
        self.skip(f"skipped: activations of {activation_bytes / 2**30:.1f} GiB, over the {cap / 2**30:.0f} GiB cap",
                  **fields)
        return True

    def skip(self, status: str, **fields) -> Dict:
        fields = {k: "" if callable(v) else v for k, v in fields.items()}
        print(f"  {fields}: {status}", flush=True)
        return self._row(fields, status=status)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def predicted_s(self, series: tuple, work: Optional[float]) -> Optional[float]:
        if work is None or series not in self.last:
            return None
        seconds, last_work = self.last[series]
        return seconds * work / max(last_work, 1e-30)

    def measure(self, series: tuple, fn: Callable[[], object], work: Optional[float] = None,
                estimate_s: Optional[float] = None, memory: bool = True, repeats: int = REPEATS,
                **fields) -> Dict:
        if series in self.failed:
            return self.skip(self.failed[series], **fields)
        if self.out_of_time():
            return self.skip(f"skipped: the script's budget of {self.args.budget_s:g} s was spent", **fields)
        guess = self.predicted_s(series, work)
        guess = estimate_s if guess is None else guess
        if guess is not None and guess > self.slow_s:
            return self.skip(f"skipped: about {guess:.3g} s per call expected, over the {self.slow_s:g} s limit "
                             f"per call", **fields)
        try:
            # A wrong prediction costs one call, not seven: a warm-up far over the limit ends the series.
            # On a GPU the first call may JIT-compile kernels: a second warm-up call is the one judged.
            timing = time_call(fn, self.device, repeats=repeats, warmup=2 if self.device.type == "cuda" else 1,
                               max_first_s=3 * self.slow_s)
            peak = peak_memory_mb(fn, self.device) if memory else float("nan")
        except TooSlow as slow:
            self.failed[series] = f"skipped: a smaller case took {slow.seconds:.3g} s for one call"
            return self.skip(f"skipped: its warm-up call took {slow.seconds:.3g} s, over 3x the {self.slow_s:g} s "
                             f"limit per call; not repeated", **fields)
        except Exception as err:  # a backend that cannot run a case (or runs out of memory) is reported, not fatal
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            self.failed[series] = f"error: {type(err).__name__}: {text}"
            return self.skip(self.failed[series], **fields)
        if work is not None:
            self.last[series] = (timing["time_s"], work)
        fields = {k: v() if callable(v) else v for k, v in fields.items()}  # what the calls found out
        row = self._row(fields, **timing, peak_mb=peak, status="ok")
        print(f"  {fields}: {timing['time_s'] * 1e3:.3f} ms, peak {peak:.1f} MiB", flush=True)
        return row

    def _write_csv(self) -> Path:
        path = self.args.out / f"{self.name}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _fmt(v) for k, v in row.items()})
        return path

    def write(self, meta: Optional[Dict] = None) -> Path:
        """The CSV with the derived columns filled in, and ``<name>.json``: the machine and the settings."""
        path = self._write_csv()
        info = {"machine": machine_info(self.device), "quick": self.args.quick, "budget_s": self.args.budget_s,
                "wall_s": time.perf_counter() - self.started, "op": self.op, "title": self.title, **(meta or {})}
        with open(self.args.out / f"{self.name}.json", "w") as f:
            json.dump(info, f, indent=1, default=str)
        print(f"wrote {path} ({len(self.rows)} rows) in {info['wall_s']:.1f} s", flush=True)
        return path


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def ok_rows(rows: List[Dict]) -> List[Dict]:
    return [r for r in rows if r.get("status") == "ok"]


# -- plots -----------------------------------------------------------------------------------------------------
def label(row: Dict) -> str:
    """A line's name in the plots: method, backend and rank (``r0`` is full rank)."""
    parts = [str(row.get(k)) for k in ("method", "backend") if row.get(k) not in (None, "")]
    rank = row.get("rank")
    if rank not in (None, "", "full"):
        parts.append("full rank" if str(rank) == "0" else f"rank {rank}")
    return " ".join(dict.fromkeys(parts))


def plot_series(rows: List[Dict], path: Path, x: str, y: str, facet_keys: List[str], title: str, ylabel: str,
                logy: bool = True) -> Optional[Path]:
    """One panel per value of ``facet_keys``, one line per ``label(row)``, ``y`` against ``x`` (log-log)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [dict(r, line=label(r)) for r in ok_rows(rows) if r.get(y) not in (None, "") and not _isnan(r[y])]
    if not rows:
        return None
    facets = sorted({tuple(r[k] for k in facet_keys) for r in rows}, key=str)
    lines = sorted({r["line"] for r in rows})
    colors = plt.get_cmap("tab20").colors
    style = {name: (colors[i % len(colors)], ("-", "--", ":")[i // len(colors) % 3]) for i, name in enumerate(lines)}
    cols = min(3, len(facets))
    nrows = math.ceil(len(facets) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols + 2.5, 3.6 * nrows), squeeze=False)
    for ax, facet in zip(axes.flat, facets):
        in_facet = [r for r in rows if tuple(r[k] for k in facet_keys) == facet]
        for name in lines:
            pts = sorted((float(r[x]), float(r[y])) for r in in_facet if r["line"] == name)
            if pts:
                color, dash = style[name]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, linestyle=dash,
                        label=name)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(facet_keys, facet)), fontsize=9)
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(facets):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=style[n][0], linestyle=style[n][1], marker="o", ms=3) for n in lines]
    fig.legend(handles, lines, loc="center right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (5.2 * cols + 2.5), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
