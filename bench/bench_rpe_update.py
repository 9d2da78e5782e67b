"""``rpe_update_`` (param += alpha * sum_j c_j eps_j, noise regenerated) per backend, against stored noise.

Baselines: ``randn_gemv`` draws the K x P noise with ``torch.randn`` and applies ``c @ E`` (what one writes without
a generator that can replay), and ``stored_gemv`` only applies ``c @ E`` with E already in memory (the
memory-bound cost of keeping the noise). Writes ``rpe_update.csv`` and ``rpe_update.png``.

    python bench/bench_rpe_update.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import torch

import common
from dopamine_fast import ops, use_backend

RANKS = (0, 1, 4)
GRID = {  # param shape -> number of noise ids, smallest first
    "quick": {(17, 33): [3, 8]},
    "cpu": {(256, 256): [16, 64, 256, 1024], (1024, 1024): [16, 64, 256]},
    "cuda": {(1024, 1024): [256, 4096], (256, 256): [1024, 16384]},
}
COLUMNS = ["rows", "cols", "K", "backend", "rank", "normals"]
DERIVED = ["normals_per_s", "ratio_to_stored"]
# Materialising K x P noise beyond this is what the op exists to avoid; the baselines stop there.
MAX_STORED_BYTES = 2 * 2**30


def main():
    args, grid, names, rec = common.start(__doc__, "rpe_update", "rpe_update_", GRID, COLUMNS, DERIVED, 30, 25)
    rates = common.noise_rates(args.device, names)
    gen = torch.Generator().manual_seed(0)
    for shape, ks in grid.items():
        param = torch.randn(*shape, generator=gen).to(args.device)
        numel = param.numel()
        for k in ks:
            coeffs = torch.randn(k, generator=gen).to(args.device)
            base = dict(rows=shape[0], cols=shape[1], K=k)
            if k * numel * 4 <= MAX_STORED_BYTES:
                rec.measure((shape, "randn_gemv"),
                            lambda: param.add_((coeffs @ torch.randn(k, numel, device=args.device)).view(shape),
                                               alpha=1e-6),
                            work=k * numel, backend="randn_gemv", rank="full", normals=k * numel, **base)
                stored = torch.randn(k, numel, device=args.device)
                rec.measure((shape, "stored_gemv"), lambda: param.add_((coeffs @ stored).view(shape), alpha=1e-6),
                            work=k * numel, backend="stored_gemv", rank="full", normals=k * numel, **base)
                del stored
            for name in names:
                for rank in RANKS:
                    normals = k * ops.low_rank_numel(shape, rank)

                    def run(name=name, rank=rank):
                        with use_backend(name):
                            ops.rpe_update_(param, coeffs, 5, 0, 0, rank, 1e-6)
                    rec.measure((shape, name, rank), run, work=normals, estimate_s=normals / rates[name],
                                backend=name, rank=rank, normals=normals, **base)
    stored = {(r["rows"], r["K"]): r["time_s"] for r in common.ok_rows(rec.rows) if r["backend"] == "stored_gemv"}
    for r in common.ok_rows(rec.rows):
        r["normals_per_s"] = r["normals"] / r["time_s"]
        s = stored.get((r["rows"], r["K"]))
        r["ratio_to_stored"] = r["time_s"] / s if s else None
    rec.write(meta={"noise_rates": rates})
    common.plot_series(rec.rows, args.out / "rpe_update.png", x="K", y="time_s", facet_keys=["rows", "cols"],
                       title="rpe_update_: seconds per call", ylabel="seconds")


if __name__ == "__main__":
    main()
