"""Turn the benchmarks' CSV files in a folder into its README.md: the machine, then tables of ratios.

    python bench/summarize.py [--out bench/results] [--command "how the files were made"]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from suite import ops_by_bench

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def read(out: Path, name: str) -> List[Dict]:
    path = out / f"{name}.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def meta(out: Path, name: str) -> Dict:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def benches(out: Path) -> List[str]:
    """The benchmarks whose results are in ``out`` (each wrote ``<name>.json`` beside its CSV)."""
    return sorted(p.stem for p in out.glob("*.json"))


def op_of(out: Path, name: str) -> Optional[str]:
    """The op that benchmark ``name`` times: its JSON names it (None: not an op benchmark); a JSON written before
    the benchmarks named their op has no "op" key, and then ``bench_<name>.py`` says."""
    info = meta(out, name)
    return info["op"] if "op" in info else ops_by_bench().get(f"bench_{name}")


def op_benches(out: Path) -> List[str]:
    """Those of them that time one op."""
    return [name for name in benches(out) if op_of(out, name)]


def num(v) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ms(v) -> str:
    v = num(v)
    return "–" if v is None else (f"{v * 1e3:.3g}" if v * 1e3 < 100 else f"{v * 1e3:.0f}")


def x(v) -> str:
    v = num(v)
    return "–" if v is None else f"{v:.3g}×"


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    if not rows:
        return ["(no rows: the benchmark was not run, or every case was skipped)", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


def ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def cases(rows, keys):
    seen = []
    for r in rows:
        key = tuple(r[k] for k in keys)
        if key not in seen:
            seen.append(key)
    return seen


def fastest(rows, **match) -> Optional[Dict]:
    found = [r for r in ok(rows) if all(r.get(k) == str(v) for k, v in match.items())]
    return min(found, key=lambda r: float(r["time_s"])) if found else None


def notes(r, label_backend=True) -> str:
    """" (backend)" of a row, and the population's path when it was not the fused one."""
    found = [r["backend"]] if label_backend else []
    found += [r["path"]] if r.get("path") not in (None, "", "fused", "closure") else []
    return f" ({', '.join(found)})" if found else ""


def cell_ratio(r, column="ratio_to_floor", label_backend=True) -> str:
    return "–" if r is None else x(r.get(column)) + notes(r, label_backend)


def machine_section(out: Path) -> List[str]:
    info = {}
    for name in ["population"] + benches(out):
        info = meta(out, name)
        if info:
            break
    m = info.get("machine", {})
    lines = ["## Machine", ""]
    for key in ("cpu", "cpu_cores", "torch_threads", "load_average_1_5_15min", "gpu", "python", "torch", "triton",
                "native_module"):
        lines.append(f"- {key}: {m.get(key)}")
    backends = m.get("backends", {})
    lines.append(f"- backends on {m.get('device')}: " + "; ".join(f"{op} {v}" for op, v in backends.items()))
    sq = info.get("square_matmul")
    if sq:
        lines.append(f"- one {sq['n']}x{sq['n']} float32 matmul: {sq['flops'] / 1e9:.1f} GFLOP/s "
                     f"(the yardstick of the FLOP/s fractions)")
    walls = {n: meta(out, n).get("wall_s") for n in benches(out)}
    lines.append("- wall time per script (s): " + ", ".join(f"{n} {w:.0f}" for n, w in walls.items() if w))
    peers = meta(out, "population").get("peers", {})
    if peers:
        lines.append(f"- peers: EvoTorch: {peers.get('evotorch')}; evosax/JAX: {peers.get('evosax')}")
    return lines + [""]


def population_section(out: Path) -> List[str]:
    rows = read(out, "population")
    if not rows:
        return []
    lines = ["## Population evaluation (K perturbed members + the unperturbed one, one minibatch)", "",
             "Time of each method over the time of the floor (one plain forward of the unperturbed network on all "
             "(K+1)·B rows); the package's columns (`df.Population(model)(opt.plan(), x, y)`) show the fastest "
             "backend. evosax is also divided by JAX's own jitted "
             "floor. Peak memory in MiB above what was live before the call.", ""]
    body = []
    for model, batch, k in cases(ok(rows), ["model", "batch", "K"]):
        c = dict(model=model, batch=batch, K=k)
        floor, jfloor = fastest(rows, method="floor", **c), fastest(rows, method="jax_floor", **c)
        f0, f1, f4 = (fastest(rows, method="population", rank=r, **c) for r in (0, 1, 4))
        evo, sax = fastest(rows, method="evotorch_eval", **c), fastest(rows, method="evosax_eval", **c)
        loop, vm = fastest(rows, method="loop", **c), fastest(rows, method="vmap", **c)
        body.append([model, batch, k, ms(floor and floor["time_s"]), ms(jfloor and jfloor["time_s"]),
                     cell_ratio(f1), cell_ratio(f4), cell_ratio(f0), cell_ratio(loop, label_backend=False),
                     cell_ratio(vm, label_backend=False), cell_ratio(evo, label_backend=False),
                     cell_ratio(sax, "ratio_to_jax_floor", False),
                     x(f1 and f1.get("speedup_vs_evotorch")), x(f0 and f0.get("speedup_vs_evotorch")),
                     f"{num(f1 and f1['peak_mb']) or 0:.1f} / {num(floor and floor['peak_mb']) or 0:.1f}"])
    lines += table(["model", "B", "K", "floor ms", "JAX floor ms", "rank 1", "rank 4", "full rank", "loop",
                    "vmap", "EvoTorch eval", "evosax eval (/JAX floor)", "r1 vs EvoTorch", "full vs EvoTorch",
                    "peak MiB r1 / floor"], body)
    flops = [r for r in ok(rows) if r["method"] == "population" and r["rank"] in ("1", "4") and int(r["batch"]) >= 32]
    if flops:
        lines += ["Matrix-multiply FLOP/s of the low-rank evaluation at B ≥ 32 (2·rows·in·out per product), as a "
                  "fraction of the square matmul's:", ""]
        lines += table(["model", "B", "K", "backend", "rank", "GFLOP/s", "fraction"],
                       [[r["model"], r["batch"], r["K"], r["backend"], r["rank"], f"{num(r['matmul_gflops']):.3g}",
                         f"{num(r['matmul_fraction']):.0%}"] for r in flops])
    return lines


def targets_section(out: Path) -> List[str]:
    """Issue 5's, 10's and 21's targets on the MLP of width 256 at K=1024 (CPU), each measured value beside its
    bound: first those of bench_targets.py (side by side in one run), then those read from the suite's CSVs."""
    pop, steps = read(out, "population"), read(out, "step")
    if not pop and not steps and not read(out, "targets"):
        return []
    body = []

    def check(what, value, bound, higher_is_better):
        if value is None:
            body.append([what, "–", bound, "not measured"])
            return
        met = value >= bound if higher_is_better else value <= bound
        sign = "≥" if higher_is_better else "≤"
        body.append([what, f"{value:.3g}", f"{sign} {bound:g}", "met" if met else "missed"])

    def val(r, column):
        return num(r.get(column)) if r else None

    for r in ok(read(out, "targets")):  # bench_targets.py: every target measured side by side in one run
        if r["method"] == "target":
            ceiling = num(r.get("ceiling"))  # where the machine bounds the value (nan or absent: it does not)
            body.append([f"{r['target']} (bench_targets.py, side by side)",
                         "–" if not r["value"] else f"{float(r['value']):.3g}",
                         r["bound"].replace("<=", "≤").replace(">=", "≥"),
                         r["verdict"] + (f" (this machine's ceiling {ceiling:.3g})" if ceiling is not None
                                         and ceiling == ceiling else "")])
    c = dict(model="mlp256", K=1024)
    for batch in (1, 32):
        s1, s0 = (fastest(steps, method="dopamine_step", rank=r, batch=batch, **c) for r in (1, 0))
        check(f"B={batch}: rank-1 step (opt.step(population=...)) / floor", val(s1, "ratio_to_floor"),
              3 if batch == 1 else 1.3, False)
        if batch == 32:
            check("B=32: full-rank step / floor", val(s0, "ratio_to_floor"), 3, False)
        r1, full = (fastest(pop, method="population", rank=r, batch=batch, **c) for r in (1, 0))
        floor = fastest(pop, method="floor", batch=batch, **c)
        check(f"B={batch}: rank-1 evaluation (Population) / floor", val(r1, "ratio_to_floor"),
              3 if batch == 1 else 1.3, False)
        if batch == 1:
            check("B=1: rank 1, speedup vs EvoTorch evaluation", val(r1, "speedup_vs_evotorch"), 40, True)
            check("B=1: full rank, speedup vs EvoTorch evaluation", val(full, "speedup_vs_evotorch"), 3, True)
        else:
            check("B=32: full-rank evaluation / floor", val(full, "ratio_to_floor"), 3, False)
            low = [r for r in ok(pop) if r["method"] == "population" and r["rank"] in ("1", "4")
                   and r["batch"] == "32" and r["model"] == "mlp256" and r["K"] == "1024"]
            best = max((num(r["matmul_fraction"]) for r in low), default=None)
            check("B=32: low-rank matmul FLOP/s / square matmul's", best, 0.7, True)
        peaks = [val(r1, "peak_mb"), val(floor, "peak_mb")]
        check(f"B={batch}: peak memory of rank-1 evaluation / floor's",
              peaks[0] / peaks[1] if None not in peaks and peaks[1] > 0 else None, 2, False)
        best_step = min((r for r in ok(steps) if r["method"] == "dopamine_step" and r["model"] == "mlp256"
                         and r["K"] == "1024" and r["batch"] == str(batch)), key=lambda r: float(r["time_s"]),
                        default=None)
        for method, bound, name in (("evotorch_pgpe_step", 10, "PGPE"), ("evosax_openes_step", 3, "Open-ES")):
            peer = fastest(pop, method=method, batch=batch, **c)
            ratio = float(peer["time_s"]) / float(best_step["time_s"]) if peer and best_step else None
            check(f"B={batch}: Dopamine step speedup vs {name} step", ratio, bound, True)
    head = ["## Targets (MLP 3×256, K=1024)", ""]
    machine = meta(out, "targets").get("machine")
    if machine:  # bench_targets.py may run on another machine than the suite: say which
        head += [f"bench_targets.py ran on {machine.get('cpu')} ({machine.get('torch_threads')} threads, load "
                 f"average {machine.get('load_average_1_5_15min')}); the other rows on the machine above.", ""]
    return head + table(["target", "measured", "bound", ""], body)


def step_section(out: Path) -> List[str]:
    rows, pop = read(out, "step"), read(out, "population")
    if not rows:
        return []
    lines = ["## One optimizer step", "",
             "Dopamine, `opt.step(population=df.Population(model), inputs=x, targets=y)` (sample + evaluate K+1 "
             "members + update), against the floor (one forward on the (K+1)·B rows), one Adam step with "
             "back-propagation on the same batch, and EvoTorch's PGPE step and evosax's Open-ES step with K samples "
             "(from population.csv).", ""]
    body = []
    for model, batch, k in cases(ok(rows), ["model", "batch", "K"]):
        c = dict(model=model, batch=batch, K=k)
        adam = fastest(rows, method="adam", **c)
        steps = [fastest(rows, method="dopamine_step", rank=r, **c) for r in (1, 4, 0)]
        closure = fastest(rows, method="dopamine_closure", **c)
        pgpe = fastest(pop, method="evotorch_pgpe_step", **c)
        openes = fastest(pop, method="evosax_openes_step", **c)
        best = min((s for s in steps if s), key=lambda s: float(s["time_s"]), default=None)

        def speedup(peer):
            return x(float(peer["time_s"]) / float(best["time_s"])) if peer and best else "–"
        body.append([model, batch, k, ms(adam and adam["time_s"])]
                    + [f"{ms(s['time_s'])}{notes(s)}" if s else "–" for s in steps]
                    + [cell_ratio(steps[0], label_backend=False), cell_ratio(steps[2], label_backend=False),
                       ms(closure and closure["time_s"]), cell_ratio(best, "ratio_to_adam", False),
                       ms(pgpe and pgpe["time_s"]), ms(openes and openes["time_s"]), speedup(pgpe), speedup(openes)])
    return lines + table(["model", "B", "K", "Adam ms", "Dopamine r1 ms", "r4 ms", "full ms", "r1 / floor",
                          "full / floor", "drop-in closure ms",
                          "best / Adam", "PGPE step ms", "Open-ES step ms", "speedup vs PGPE",
                          "speedup vs Open-ES"], body)


def cell(column: str, v) -> str:
    """A derived column's value: ratios as ``N×``, fractions as percentages, rates to 3 digits."""
    if num(v) is None:
        return "–"
    if column.startswith(("ratio_", "speedup_")):
        return x(v)
    return f"{num(v):.0%}" if column.endswith("fraction") else f"{num(v):.3g}"


def op_section(out: Path, name: str) -> List[str]:
    """One op benchmark's table: its case columns as written, the time, its derived columns, the peak memory."""
    rows, info = ok(read(out, name)), meta(out, name)
    title = [f"`{op_of(out, name)}`: " + (info.get("title") or name).replace("``", "`"), ""]
    if not rows:
        return title + table([], [])
    header = list(rows[0])
    cases_ = [c for c in header[header.index("device") + 1:header.index("time_s")] if c not in ("members", "normals")]
    derived = header[header.index("status") + 1:]
    return title + table(cases_ + ["ms"] + derived + ["peak MiB"],
                         [[r[c] for c in cases_] + [ms(r["time_s"])] + [cell(c, r[c]) for c in derived]
                          + [f"{num(r['peak_mb']) or 0:.1f}"] for r in rows])


def ops_section(out: Path) -> List[str]:
    names = op_benches(out)
    return ["## Single ops", ""] + [line for name in names for line in op_section(out, name)] if names else []


def dispatch_section(out: Path) -> List[str]:
    rows = ok(read(out, "dispatch"))
    if not rows:
        return []
    return ["## Op-layer overhead (bench_dispatch.py)", "",
            "Tiny inputs; `native` is the compiled op called directly, `public_op` is `torch.ops.dopamine_fast.*` "
            "(the dispatcher calls the package's Python body), `python_api` is `dopamine_fast.ops.*` (what the "
            "package's own code calls), `backend_choice` the cached choice alone. Medians over interleaved rounds; "
            "overhead is the median time above `native` (target: at most 5 µs).", ""] + table(
        ["op", "method", "µs per call", "overhead µs"],
        [[r["op"], r["method"], f"{num(r['time_us']):.2f}",
          "–" if num(r["overhead_us"]) is None else f"{num(r['overhead_us']):+.2f}"] for r in rows])


def skipped_section(out: Path) -> List[str]:
    counts = Counter()
    for name in benches(out):
        for r in read(out, name):
            if r.get("status") != "ok":
                status = re.sub(r"about \S+ s per call", "about N s per call", r["status"])
                counts[(name, r.get("method") or r.get("backend"), status)] += 1
    if not counts:
        return []
    return ["## Cases not measured", ""] + table(["bench", "method/backend", "why", "cases"],
                                                 [[*k, n] for k, n in sorted(counts.items())])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--command", default="python bench/run_cpu_suite.py")
    args = parser.parse_args()
    out = Path(args.out)
    lines = ["# Benchmark results", "",
             f"Made by `{args.command}`; every timing is the median of at least 5 runs after a warm-up "
             "(the CSV files hold min and max too). Plots: `*.png` beside this file.", "",
             "The floor (one plain forward on all (K+1)·B rows) multiplies the shared minibatch by the first "
             "layer's weight once per member; the fused ops do it once for all members, so ratios below 1× to the "
             "floor are real, and FLOP/s fractions (counted as the floor's 2·rows·in·out per product) can exceed "
             "100 %.", "",
             "Run: `python bench/run_cpu_suite.py` (CPU suite, under 10 minutes), `bash bench/gpu/run.sh` (GPU: "
             "every `bench/bench_*.py --device cuda`, larger K); one script: `python bench/bench_population.py "
             "[--device cuda] [--out DIR] [--quick]`; this file: `python bench/summarize.py --out DIR`. The peers "
             "are optional: `pip install --no-deps evotorch && pip install ray cma gymnasium pandas` (keeps the "
             "installed torch) and `pip install \"jax[cpu]\" evosax`; where one is missing its rows say so.", ""]
    for section in (machine_section, targets_section, population_section, step_section, dispatch_section,
                    ops_section, skipped_section):
        lines += section(out)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'README.md'}")


if __name__ == "__main__":
    main()
