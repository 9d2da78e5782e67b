"""The noise generator's rate (normals per second) per backend, against ``torch.randn`` of the same size.

Each backend fills [num_ids, numel] with the Philox4x32-10 + Box-Muller normals of docs/noise.md; ``torch.randn``
(into a preallocated tensor) is the yardstick. Writes ``noise.csv`` and ``noise.png``.

    python bench/bench_noise.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import torch

import common
from dopamine_fast import use_backend

GRID = {  # (num_ids, numel per id), smallest first
    "quick": [(2, 1000), (4, 4099)],
    "cpu": [(1, 1 << 16), (16, 1 << 16), (16, 1 << 20), (64, 1 << 20)],
    # On a GPU (issue 11's one short session) the sizes that answer the question, largest last.
    "cuda": [(1, 1 << 16), (16, 1 << 20), (256, 1 << 20)],
}
COLUMNS = ["num_ids", "numel", "normals", "backend"]
DERIVED = ["normals_per_s", "ratio_to_randn"]


def main():
    args, grid, names, rec = common.start(__doc__, "noise", "noise_", GRID, COLUMNS, DERIVED, 20, 20)
    for num_ids, numel in grid:
        out = torch.empty(num_ids, numel, device=args.device)
        base = dict(num_ids=num_ids, numel=numel, normals=num_ids * numel)
        rec.measure(("randn",), lambda: torch.randn(num_ids, numel, out=out), work=num_ids * numel,
                    backend="torch.randn", **base)
        for name in names:
            def run(name=name):
                with use_backend(name):
                    torch.ops.dopamine_fast.noise_(out, 7, 3, 2, 0)
            rec.measure((name,), run, work=num_ids * numel, backend=name, **base)
    randn = {r["normals"]: r["time_s"] for r in common.ok_rows(rec.rows) if r["backend"] == "torch.randn"}
    for r in common.ok_rows(rec.rows):
        r["normals_per_s"] = r["normals"] / r["time_s"]
        if r["normals"] in randn:
            r["ratio_to_randn"] = randn[r["normals"]] / r["time_s"]  # > 1: faster than torch.randn
    rec.write()
    common.plot_series(rec.rows, args.out / "noise.png", x="normals", y="normals_per_s", facet_keys=["device"],
                       title="Noise generation rate", ylabel="normals / s")


if __name__ == "__main__":
    main()
