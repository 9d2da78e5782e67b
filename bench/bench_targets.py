"""Issue 10's and issue 21's speed and memory targets on the MLP 3x256 at K = 1024, measured side by side in one run.

Per batch (32, then 1) and per round, one after the other, so that load on a shared machine falls on all alike: the
floor (one plain forward of the unperturbed network on all (K+1)*B rows), a whole Dopamine step through the public
API (``opt.step(population=df.Population(model), inputs=x, targets=y)``) at rank 1, rank 4 and full rank, the
evaluation alone (``df.Population(model)(opt.plan(), x, y)``) at rank 1 and full rank, EvoTorch's evaluation of a
ready population of K+1 members (where EvoTorch is installed) and a square 2048x2048 matmul (the yardstick of the
matmul rate). Each row holds the median over rounds of the time and of the per-round ratios; then the peak memory of
the rank-1 evaluation and of the floor. Writes ``targets.csv``: a row per way, and a row per target
(``method=target``: what, value, bound, verdict, and ``ceiling`` where the machine bounds the value).

Two ceilings are measured in the same rounds: ``matmul_fraction`` of the floor (torch's own GEMM on the same rows,
against the square matmul's rate), and ``speedup_ceiling`` of the rank-1 evaluation, EvoTorch's time over the time
of the matrix products no evaluation can skip (``Workload.member_flops``: every layer after the first on all
(K+1)*B rows) at the square matmul's rate: the speedup over EvoTorch of an evaluation whose only cost were those
products, run as fast as this machine runs a square matmul.

    python bench/bench_targets.py [--threads 2] [--out DIR] [--quick]
"""

from __future__ import annotations

import statistics
import time

import torch

import common
import dopamine_fast as df
from peers import EvoTorchPeer, evotorch_status
from workloads import dopamine, floor_inputs, floor_loss, make_workload

SIGMA = 0.05
SQUARE = 2048  # the square matmul of the matmul-rate yardstick (common.matmul_flops's CPU size)
GRID = {"quick": ("mlp32", 8, (32, 1), 3), "full": ("mlp256", 1024, (32, 1), 9)}  # model, K, batches, rounds
# (what, batch, method, rank, column, bound, lower is better)
TARGETS = [
    ("rank-1 step / floor", 32, "dopamine_step", 1, "ratio_to_floor", 1.3, True),
    ("full-rank step / floor", 32, "dopamine_step", 0, "ratio_to_floor", 3.0, True),
    ("rank-1 step / floor", 1, "dopamine_step", 1, "ratio_to_floor", 3.0, True),
    ("rank-1 evaluation matmul FLOP/s / square matmul's", 32, "population_eval", 1, "matmul_fraction", 0.7, False),
    ("rank-1 evaluation, speedup vs EvoTorch's evaluation", 1, "population_eval", 1, "speedup_vs_evotorch", 40.0,
     False),
    ("full-rank evaluation, speedup vs EvoTorch's evaluation", 1, "population_eval", 0, "speedup_vs_evotorch", 1.0,
     False),
    ("peak memory of the rank-1 evaluation / floor's", 1, "population_eval", 1, "peak_vs_floor", 2.0, True),
]
# Targets the machine itself bounds: (batch, method, rank, column) -> the column of the same row that bounds it.
CEILINGS = {(1, "population_eval", 1, "speedup_vs_evotorch"): "speedup_ceiling"}
COLUMNS = ["model", "batch", "K", "method", "rank", "path", "target", "value", "bound", "verdict", "ceiling"]
DERIVED = ["ratio_to_floor", "speedup_vs_evotorch", "matmul_fraction", "peak_vs_floor", "speedup_ceiling"]


def ways_for(w, k, batch, pops):
    """The ways timed in each round, keyed (method, rank)."""
    xf, yf = floor_inputs(w, k + 1)
    ways = {("floor", ""): lambda: floor_loss(w, xf, yf)}
    for rank in (1, 4, 0):
        opt = dopamine(w, k, rank, SIGMA)
        ways[("dopamine_step", rank)] = lambda opt=opt: opt.step(population=pops["step"], inputs=w.x, targets=w.y)
    for rank in (1, 0):
        plan = dopamine(w, k, rank, SIGMA).plan()
        ways[("population_eval", rank)] = lambda plan=plan: pops["eval"](plan, w.x, w.y)
    if evotorch_status() is None:
        ways[("evotorch_eval", "full")] = EvoTorchPeer(w, k, SIGMA).evaluate
    a, b = torch.randn(SQUARE, SQUARE, device=w.x.device), torch.randn(SQUARE, SQUARE, device=w.x.device)
    ways[("square_matmul", "")] = lambda: torch.mm(a, b)
    return ways


def run_batch(rec, model, k, batch, rounds, device):
    w = make_workload(model, batch, device)
    pops = {"step": df.Population(w.model), "eval": df.Population(w.model)}
    ways = ways_for(w, k, batch, pops)
    for fn in ways.values():  # warm-up
        fn()
    times = {key: [] for key in ways}
    for _ in range(rounds):
        if rec.out_of_time():
            break
        for key, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            common.synchronize(device)
            times[key].append(time.perf_counter() - t0)
    base = dict(model=model, batch=batch, K=k)
    if not times[("floor", "")]:
        rec.skip(f"skipped: the script's budget of {rec.args.budget_s:g} s was spent", method="all", **base)
        return
    peaks = {key: common.peak_memory_mb(ways[key], device) for key in (("floor", ""), ("population_eval", 1))}

    def per_round(key, other, ratio):  # median over rounds of a per-round ratio against another way
        if key not in times or other not in times:
            return float("nan")
        return statistics.median(ratio(t, o) for t, o in zip(times[key], times[other]))

    flops = w.matmul_flops((k + 1) * batch)
    square_flops = 2 * SQUARE**3

    def matmul_fraction(key, work):  # the rate of ``work`` FLOPs in ``key``'s time over the square matmul's rate
        return per_round(key, ("square_matmul", ""), lambda t, m: (work / t) / (square_flops / m))
    for (method, rank), ts in times.items():
        if method == "square_matmul":
            continue
        key = (method, rank)
        row = rec.record({"time_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": len(ts)},
                         peak_mb=peaks.get(key, float("nan")), method=method, rank=rank,
                         path=pops["eval" if method == "population_eval" else "step"].last_path
                         if method in ("population_eval", "dopamine_step") else "", **base)
        row["ratio_to_floor"] = per_round(key, ("floor", ""), lambda t, f: t / f)
        if method == "floor":
            row["matmul_fraction"] = matmul_fraction(key, flops)
        if method == "population_eval":
            row["speedup_vs_evotorch"] = per_round(key, ("evotorch_eval", "full"), lambda t, e: e / t)
            row["matmul_fraction"] = matmul_fraction(key, flops)
            if rank == 1:
                unavoidable = w.member_flops(k + 1)
                row["speedup_ceiling"] = per_round(("evotorch_eval", "full"), ("square_matmul", ""),
                                                   lambda e, m: e / (unavoidable / (square_flops / m)))
            floor_peak = peaks[("floor", "")]
            row["peak_vs_floor"] = peaks[key] / floor_peak if key in peaks and floor_peak > 0 else float("nan")
        print(f"  B={batch} {method} rank={rank}: {row['time_s'] * 1e3:.2f} ms, {row['ratio_to_floor']:.2f}x the floor"
              + "".join(f", {c} {row[c]:.3g}" for c in DERIVED[1:] if c in row), flush=True)


def judge(rec):
    """A row per target, from the ways' rows."""
    for what, batch, method, rank, column, bound, lower in TARGETS:
        rows = [r for r in rec.rows if r.get("batch") == batch and r.get("method") == method
                and r.get("rank") == rank and r.get("status") == "ok"]
        value = rows[0].get(column, float("nan")) if rows else float("nan")
        verdict = ("not measured" if value != value
                   else "met" if (value <= bound if lower else value >= bound) else "missed")
        ceiling_column = CEILINGS.get((batch, method, rank, column))
        ceiling = rows[0].get(ceiling_column, float("nan")) if rows and ceiling_column else float("nan")
        rec.record({}, method="target", model=rows[0]["model"] if rows else "", batch=batch,
                   K=rows[0]["K"] if rows else "", rank=rank, target=f"B={batch}: {what}", value=value,
                   bound=f"{'<=' if lower else '>='} {bound:g}", verdict=verdict, ceiling=ceiling)
        print(f"  B={batch}: {what}: {value:.3g} (target {'<=' if lower else '>='} {bound:g}): {verdict}"
              + (f"; this machine's ceiling {ceiling:.3g}" if ceiling == ceiling else ""), flush=True)


def main():
    args = common.parse_args(__doc__.splitlines()[0], budget_s=600, cuda_budget_s=120)
    model, k, batches, rounds = GRID["quick" if args.quick else "full"]
    rec = common.Recorder("targets", args, COLUMNS, DERIVED)
    for batch in batches:
        run_batch(rec, model, k, batch, rounds, args.device)
    judge(rec)
    rec.write(meta={"sigma": SIGMA, "rounds": rounds, "evotorch": evotorch_status() or "installed"})


if __name__ == "__main__":
    main()
