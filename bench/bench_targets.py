"""Issue 10's speed targets, each ratio measured side by side: one Dopamine step through the public API over the
inference floor, on the MLP 3x256 at K = 1024.

Per round, the floor (one plain forward of the unperturbed network on all (K+1)*B rows) and
``opt.step(population=df.Population(model), inputs=x, targets=y)`` at rank 1, rank 4 and full rank are timed one
after the other, so that load on a shared machine falls on all alike; each row holds the median over rounds of the
per-round time and of the per-round ratio to the floor. Targets: B = 32 rank 1 <= 1.3x, full rank <= 3x;
B = 1 rank 1 <= 3x. Writes ``targets.csv``.

    python bench/bench_targets.py [--threads 2] [--out DIR] [--quick]
"""

from __future__ import annotations

import statistics
import time

import common
import dopamine_fast as df
from workloads import dopamine, floor_inputs, floor_loss, make_workload

SIGMA = 0.05
TARGETS = {(32, 1): 1.3, (32, 0): 3.0, (1, 1): 3.0}  # (batch, rank) -> bound on step time / floor time
GRID = {"quick": ("mlp32", 8, (4, 1), 3), "full": ("mlp256", 1024, (32, 1), 9)}  # model, K, batches, rounds
COLUMNS = ["model", "batch", "K", "method", "rank", "path", "ratio_to_floor", "bound", "verdict"]


def main():
    args = common.parse_args(__doc__.splitlines()[0], budget_s=240, cuda_budget_s=60)
    model, k, batches, rounds = GRID["quick" if args.quick else "full"]
    rec = common.Recorder("targets", args, COLUMNS)
    for batch in batches:
        w = make_workload(model, batch, args.device)
        xf, yf = floor_inputs(w, k + 1)
        pop = df.Population(w.model)
        ways = {("floor", ""): lambda: floor_loss(w, xf, yf)}
        for rank in (1, 4, 0):
            opt = dopamine(w, k, rank, SIGMA)
            ways[("dopamine_step", rank)] = lambda opt=opt: opt.step(population=pop, inputs=w.x, targets=w.y)
        for fn in ways.values():  # warm-up
            fn()
        times = {key: [] for key in ways}
        for _ in range(rounds):
            if rec.out_of_time():
                break
            for key, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                common.synchronize(args.device)
                times[key].append(time.perf_counter() - t0)
        floor = times[("floor", "")]
        for (method, rank), ts in times.items():
            if not ts:
                rec.skip(f"skipped: the script's budget of {args.budget_s:g} s was spent", model=model, batch=batch,
                         K=k, method=method, rank=rank)
                continue
            ratio = statistics.median(t / f for t, f in zip(ts, floor))
            bound = TARGETS.get((batch, rank)) if method != "floor" else None
            timing = {"time_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": len(ts)}
            rec.record(timing, model=model, batch=batch, K=k, method=method, rank=rank,
                       path=pop.last_path if method != "floor" else "", ratio_to_floor=ratio, bound=bound,
                       verdict="" if bound is None else "met" if ratio <= bound else "missed")
            print(f"  B={batch} {method} rank={rank}: {timing['time_s'] * 1e3:.1f} ms, {ratio:.2f}x the floor"
                  + (f" (target <= {bound}x: {rec.rows[-1]['verdict']})" if bound else ""), flush=True)
    rec.write(meta={"sigma": SIGMA, "rounds": rounds})


if __name__ == "__main__":
    main()
