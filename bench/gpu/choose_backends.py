"""Which of two backends is faster per op, from the op benchmarks' CSV files: the registry's preference on a card.

For every op benchmark in the folder (its JSON names the op it times) and the population benchmark (the whole fused
path, by rank), the cases both backends ran are paired (same sizes, same rank) and the ratio of their
median times taken; the geometric mean over the cases, and how many each won, go to ``backend_choice.csv``.
``bench/results/gpu/README.md`` records the numbers behind the registry's order.

    python bench/gpu/choose_backends.py --out DIR [--backends cuda,triton]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

WHOLE_PATH = {"population": ("population (whole fused path)", ["model", "batch", "K", "rank"])}
NOT_A_CASE = ("backend", "members", "normals")  # columns that do not name a case (or follow from those that do)


def sources(out: Path) -> dict:
    """bench CSV -> (what it times, columns that name a case): the op benchmarks written to ``out``, whose JSON
    names the op and whose case columns are those the CSV writes before its times, and the whole path."""
    found = {}
    for path in sorted(out.glob("*.json")):
        op = json.loads(path.read_text()).get("op")
        csv_path = path.with_suffix(".csv")
        if op and csv_path.exists():
            with open(csv_path) as f:
                header = next(csv.reader(f))
            found[path.stem] = (op, [c for c in header[header.index("device") + 1:header.index("time_s")]
                                     if c not in NOT_A_CASE])
    return {**found, **WHOLE_PATH}


def compare(path: Path, keys, first: str, second: str):
    """``[(case, first's seconds, second's seconds)]`` over the cases both ran."""
    times = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("status") == "ok" and row.get("backend") in (first, second):
                times.setdefault(tuple(row[k] for k in keys), {})[row["backend"]] = float(row["time_s"])
    return [(case, t[first], t[second]) for case, t in times.items() if first in t and second in t]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder holding the benchmarks' CSV files")
    parser.add_argument("--backends", default="cuda,triton", help="the two backends to compare, first,second")
    args = parser.parse_args()
    first, second = args.backends.split(",")
    out = Path(args.out)
    rows = []
    for bench, (op, keys) in sources(out).items():
        path = out / f"{bench}.csv"
        pairs = compare(path, keys, first, second) if path.exists() else []
        if not pairs:
            rows.append(dict(op=op, bench=bench, cases=0, preferred="not measured"))
            continue
        logs = [math.log(b / a) for _, a, b in pairs]
        geomean = math.exp(sum(logs) / len(logs))  # > 1: the second backend is slower
        rows.append({"op": op, "bench": bench, "cases": len(pairs),
                     f"{first}_faster": sum(1 for _, a, b in pairs if a < b),
                     f"{second}_faster": sum(1 for _, a, b in pairs if b < a),
                     f"geomean_{second}_over_{first}": f"{geomean:.3g}",
                     "preferred": first if geomean >= 1 else second})
        print(f"{op:30s} {len(pairs):3d} cases: {second}/{first} time {geomean:.3g} -> {rows[-1]['preferred']}")
    fields = ["op", "bench", "cases", f"{first}_faster", f"{second}_faster", f"geomean_{second}_over_{first}",
              "preferred"]
    with open(out / "backend_choice.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'backend_choice.csv'}")


if __name__ == "__main__":
    main()
