"""Per-call overhead of the package's op layer: the public op and the Python API against the compiled op itself.

On inputs so small that the kernel takes next to nothing, each op is called four ways: ``native`` (the compiled
``torch.ops.dopamine_fast_C.<op>``), ``public_op`` (``torch.ops.dopamine_fast.<op>``: the dispatcher calls the
package's Python body, which picks the backend), ``python_api`` (``dopamine_fast.ops.<op>``, what the package's
own code calls; in eager mode it runs that body without the dispatcher's round trip) and ``backend_choice``
(``backends.dispatch`` alone: the cached choice). The ways are timed in turns, round after round, so that load on a
shared machine falls on all of them alike; each row is the median over rounds. ``overhead_us`` is the median
time above ``native``'s. Writes ``dispatch.csv`` and ``dispatch.png``.

    python bench/bench_dispatch.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import statistics
import time

import torch

import common
import dopamine_fast as df
from dopamine_fast import backends

COLUMNS = ["op", "method", "time_us", "overhead_us"]
ROUNDS = {"quick": 5, "full": 41}
CALLS_PER_ROUND = 300


def cases(device: torch.device):
    """``op -> (argument tuple of the op, the Python API call)`` on tiny tensors."""
    out = torch.empty(1, 8, device=device)
    x, w, b = (torch.randn(2, 8, device=device), torch.randn(8, 8, device=device), torch.randn(8, device=device))
    param, coeffs = torch.zeros(4, 8, device=device), torch.ones(3, device=device)
    linear = (x, w, b, 1, 0, 0, 1, 0.1, 3, 1, True, False, "tanh")
    return {
        "noise_": ((out, 1, 0, 0, 0), lambda: df.ops.noise(1, 0, 0, 0, 1, 8, device=device)),
        "perturbed_linear": (linear, lambda: df.ops.perturbed_linear(*linear)),
        "rpe_update_": ((param, coeffs, 1, 0, 0, 1, 1e-3),
                        lambda: df.ops.rpe_update_(param, coeffs, 1, 0, 0, 1, 1e-3)),
    }


def interleaved(ways: dict, device: torch.device, rounds: int) -> dict:
    """Median seconds per call of each way, timing the ways in turn within every round."""
    samples = {name: [] for name in ways}
    for fn in ways.values():  # warm-up
        for _ in range(20):
            fn()
    common.synchronize(device)
    for _ in range(rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            for _ in range(CALLS_PER_ROUND):
                fn()
            common.synchronize(device)
            samples[name].append((time.perf_counter() - t0) / CALLS_PER_ROUND)
    return samples


def main():
    args = common.parse_args(__doc__.splitlines()[0], budget_s=60, cuda_budget_s=60)
    rec = common.Recorder("dispatch", args, COLUMNS)
    rounds = ROUNDS["quick" if args.quick else "full"]
    native_ns = getattr(torch.ops, df.backends.native.NAMESPACE)
    if df.backends.native.load_error() is not None:
        print(f"no compiled module ({df.backends.native.load_error()}): nothing to compare against", flush=True)
    for op, (op_args, api) in cases(args.device).items():
        if df.backends.native.load_error() is not None or rec.out_of_time():
            rec.skip("skipped: " + (df.backends.native.load_error() or "the script's budget was spent"), op=op)
            continue
        native, public = getattr(native_ns, op).default, getattr(torch.ops.dopamine_fast, op).default
        ways = {"native": lambda: native(*op_args), "public_op": lambda: public(*op_args), "python_api": api,
                "backend_choice": lambda: backends.dispatch(op, args.device)}
        samples = interleaved(ways, args.device, rounds)
        base = samples["native"]
        for name, times in samples.items():
            extra = [t - n for t, n in zip(times, base)]
            timing = {"time_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                      "repeats": rounds}
            row = rec.record(timing, op=op, method=name, time_us=timing["time_s"] * 1e6,
                             overhead_us=statistics.median(extra) * 1e6 if name != "backend_choice" else None)
            print(f"  {op:17s} {name:15s} {row['time_us']:8.2f} us"
                  + (f"  (+{row['overhead_us']:.2f} us)" if row["overhead_us"] is not None else ""), flush=True)
    rec.write(meta={"calls_per_round": CALLS_PER_ROUND, "rounds": rounds,
                    "backend": {op: backends.select(op, args.device) for op in cases(args.device)}})
    plot(rec.rows, args.out / "dispatch.png")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = common.ok_rows(rows)
    if not rows:
        return
    ops = list(dict.fromkeys(r["op"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [next((r["time_us"] for r in rows if r["op"] == op and r["method"] == method), 0) for op in ops]
        ax.bar([j + i * width for j in range(len(ops))], values, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ops))], ops)
    ax.set_ylabel("µs per call (median)")
    ax.set_title("Op-layer overhead on tiny inputs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
