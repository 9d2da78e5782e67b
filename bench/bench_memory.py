"""Peak memory of one training step at the paper's RNN size: Dopamine through ``opt.step(population=...)`` against
one Adam step with back-propagation through time, measured side by side in one process with one meter.

The model is the paper's forecaster, ``nn.RNN(3, 512)`` + ``LastHidden`` + ``nn.Linear(512, 3)``, on 4000 windows
of 32 steps (the full training set as one batch). Each row is the growth of the process's resident set during
one step above what was live before it (``common.peak_memory_mb``: the kernel's high-water mark, reset just before
the step): activations and temporaries of the step; for Adam also its gradients. The peak varies from run to run
(the allocator), so each case runs ``--repeats`` times (Adam ``--bptt-repeats``), each after a small warm-up step
(thread pools, lazy state) with a fresh model: the median counts, the worst is reported beside it.
Dopamine runs at K = 16 and K = 256, without and with ``Population(max_memory=...)`` (the budget is
``--budget-fraction`` of Adam's measured peak). Writes ``memory_cpu.csv`` and ``memory_cpu.md``. With ``--device
cuda`` the meter is the CUDA caching allocator's peak (exact: the same on every run) and the files are
``memory_cuda.*``.

    python bench/bench_memory.py [--quick] [--ks 16,256] [--rank 0] [--device cuda] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common
import dopamine_fast as df
from dopamine_fast.tasks.models import ElmanForecaster

TARGET = 0.25  # the paper's claim: at most a quarter of back-propagation's memory
SIZES = {"paper": dict(hidden=512, windows=4000, steps=32, inputs=3), "quick": dict(hidden=64, windows=200, steps=8,
                                                                                     inputs=3)}
COLUMNS = ["method", "K", "rank", "max_memory_mb", "peak_mb", "peaks_mb", "ratio_to_bptt", "worst_to_bptt", "time_s",
           "hidden", "windows", "steps", "threads"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke runs")
    parser.add_argument("--ks", default="16,256", help="comma-separated numbers of perturbations K")
    parser.add_argument("--rank", type=int, default=0, help="noise rank of the Dopamine runs (0: full rank)")
    parser.add_argument("--budget-fraction", type=float, default=0.2,
                        help="max_memory of the budgeted runs as a fraction of Adam/BPTT's measured peak")
    parser.add_argument("--bptt-repeats", type=int, default=3, help="Adam/BPTT steps measured (the median counts)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Dopamine steps measured per case, each with a fresh model (the median counts)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=str(common.ROOT / "bench" / "results"), help="folder for the results")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    return args


def data(size: dict, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(size["windows"], size["steps"], size["inputs"], generator=g)
    return x.to(device), torch.randn(size["windows"], size["inputs"], generator=g).to(device)


def model_of(size: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    # parameters require grad, as every module's do
    return ElmanForecaster(size["inputs"], size["hidden"]).to(device)


def bptt_step(size: dict, x: torch.Tensor, y: torch.Tensor):
    model = model_of(size, x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()

    return step


def dopamine_step(size: dict, x, y, k: int, rank: int, max_memory):
    model = model_of(size, x.device)
    opt = df.Dopamine(model.parameters(), num_perturbations=k, rank=rank)
    pop = df.Population(model, "mse", max_memory=max_memory)

    def step():
        opt.step(population=pop, inputs=x, targets=y)
        assert pop.last_path == "fused"

    return step


def measure(make_step, x, y):
    """Peak MiB and seconds of one step, after a warm-up step on a few windows."""
    make_step(x[:8], y[:8])()
    step = make_step(x, y)
    t0 = time.perf_counter()
    peak = common.peak_memory_mb(step, x.device)
    return peak, time.perf_counter() - t0


def main():
    args = parse_args()
    size = SIZES["quick" if args.quick else "paper"]
    x, y = data(size, args.device)
    ks = [int(k) for k in args.ks.split(",")]
    threads = torch.get_num_threads()
    rows = []

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"memory_{args.device.type}" + ("_quick" if args.quick else "")

    def record(method, k, max_memory, peaks, seconds, bptt_peak):
        peak = peaks[len(peaks) // 2]
        row = dict(method=method, K=k, rank=args.rank if k else "", peak_mb=round(peak, 1),
                   peaks_mb=" ".join(str(round(p, 1)) for p in peaks),
                   max_memory_mb=round(max_memory / 2**20, 1) if max_memory else "",
                   ratio_to_bptt=round(peak / bptt_peak, 3), worst_to_bptt=round(peaks[-1] / bptt_peak, 3),
                   time_s=round(seconds, 2), threads=threads,
                   **{key: size[key] for key in ("hidden", "windows", "steps")})
        rows.append(row)
        print(row, flush=True)
        write(out, name, rows, size, threads, args.device)  # after every row: a long run leaves what it measured

    def repeated(make_step, repeats):
        """Peaks (sorted) and the median's seconds of ``repeats`` steps: the resident set's peak varies from run to
        run (the allocator), so one step is not a measurement."""
        runs = sorted(measure(make_step, x, y) for _ in range(repeats))
        return [p for p, _ in runs], runs[len(runs) // 2][1]

    bptt, seconds = repeated(lambda xs, ys: bptt_step(size, xs, ys), args.bptt_repeats)
    bptt_peak = bptt[len(bptt) // 2]
    record("adam_bptt", "", None, bptt, seconds, bptt_peak)
    budget = int(args.budget_fraction * bptt_peak * 2**20)
    for k in ks:
        for max_memory in (budget, None):
            peaks, seconds = repeated(lambda xs, ys: dopamine_step(size, xs, ys, k, args.rank, max_memory),
                                      args.repeats)
            record("dopamine", k, max_memory, peaks, seconds, bptt_peak)
    print(f"wrote {out / name}.csv and .md")


def write(out: Path, name: str, rows, size, threads, device) -> None:
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{name}.md").write_text(table(rows, size, threads, device))


def table(rows, size, threads, device) -> str:
    where = (f"CUDA, {torch.cuda.get_device_name(device)}; the caching allocator's peak above what was live before "
             f"the step" if device.type == "cuda" else f"CPU, {threads} threads; peak growth of the resident set "
             f"during one step")
    lines = [f"# Peak memory of one training step ({where})", "",
             f"RNN {size['inputs']} -> {size['hidden']} (tanh) + LastHidden + Linear -> {size['inputs']}, "
             f"{size['windows']} windows x {size['steps']} steps in one batch, float32 "
             f"(`python bench/bench_memory.py{' --device cuda' * (device.type == 'cuda')}`); "
             f"target: Dopamine <= {TARGET} x Adam/BPTT. "
             f"Each case: the median of its steps (every step's peak listed), each with a fresh model.", "",
             "| method | K | rank | max_memory (MiB) | peak (MiB) | peaks (MiB) | / BPTT | worst / BPTT | meets target "
             "| step (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        meets = "" if r["method"] == "adam_bptt" else ("yes" if r["ratio_to_bptt"] <= TARGET else "no")
        lines.append(f"| {r['method']} | {r['K']} | {r['rank']} | {r['max_memory_mb']} | {r['peak_mb']} | "
                     f"{r['peaks_mb']} | {r['ratio_to_bptt']} | {r['worst_to_bptt']} | {meets} | {r['time_s']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
