"""``perturbed_linear`` (K members + the unperturbed one, fused tanh) per backend, against the floor.

The floor is one plain ``tanh(F.linear)`` of the unperturbed layer on all (K+1)*B rows. The case K=1024, B=32,
256->256 is the one issue 3's report asks for. Writes ``perturbed_linear.csv`` and ``perturbed_linear.png``.

    python bench/bench_perturbed_linear.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import common
from dopamine_fast import ops, use_backend

SIGMA = 0.01
RANKS = (0, 1, 4)
GRID = {  # (in, out, batch) -> K, smallest first
    "quick": {(33, 17, 5): [3, 8]},
    "cpu": {(256, 256, 32): [16, 64, 256, 1024], (256, 256, 1): [16, 64, 256, 1024, 4096],
            (1024, 1024, 32): [16, 64, 256], (1024, 1024, 1): [16, 64, 256, 1024]},
    # On a GPU (issue 11's one short session): the MLP 3x1024 layer at K=4096, B=32 first.
    "cuda": {(1024, 1024, 32): [256, 4096], (256, 256, 32): [1024, 16384], (1024, 1024, 1): [4096],
             (1024, 1024, 256): [4096]},
}
COLUMNS = ["in_features", "out_features", "batch", "K", "members", "backend", "rank", "normals"]
DERIVED = ["ratio_to_floor", "gflops", "matmul_fraction"]


def main():
    args, grid, names, rec = common.start(__doc__, "perturbed_linear", "perturbed_linear", GRID, COLUMNS, DERIVED,
                                          60, 40)
    matmul = common.matmul_flops(args.device)
    rates = common.noise_rates(args.device, names)
    gen = torch.Generator().manual_seed(0)
    for (fin, fout, batch), ks in grid.items():
        weight = (torch.randn(fout, fin, generator=gen) / fin**0.5).to(args.device)
        bias = torch.randn(fout, generator=gen).to(args.device)
        x = torch.randn(batch, fin, generator=gen).to(args.device)
        for k in ks:
            members = k + 1
            base = dict(in_features=fin, out_features=fout, batch=batch, K=k, members=members)
            flops = 2.0 * members * batch * fin * fout
            if rec.too_large(4.0 * members * batch * max(fin, fout), backend="all", **base):
                continue
            xf = x.expand(members, batch, fin).reshape(-1, fin).contiguous()
            rec.measure((fin, batch, "floor"), lambda: torch.tanh(F.linear(xf, weight, bias)), work=flops,
                        backend="floor", rank="", **base)
            for name in names:
                for rank in RANKS:
                    normals = k * (ops.low_rank_numel(weight.shape, rank) + fout)

                    def run(name=name, rank=rank):
                        with use_backend(name):
                            return ops.perturbed_linear(x, weight, bias, 5, 0, 0, 1, SIGMA, members, rank,
                                                        activation="tanh")
                    estimate = normals / rates[name] + 2 * flops / matmul["flops"]
                    rec.measure((fin, batch, name, rank), run, work=normals + flops / 10, estimate_s=estimate,
                                backend=name, rank=rank, normals=normals, **base)
    floors = {(r["in_features"], r["batch"], r["K"]): r["time_s"] for r in common.ok_rows(rec.rows)
              if r["backend"] == "floor"}
    for r in common.ok_rows(rec.rows):
        floor = floors.get((r["in_features"], r["batch"], r["K"]))
        r["ratio_to_floor"] = r["time_s"] / floor if floor else None
        r["gflops"] = 2.0 * r["members"] * r["batch"] * r["in_features"] * r["out_features"] / r["time_s"] / 1e9
        r["matmul_fraction"] = r["gflops"] * 1e9 / matmul["flops"]
    rec.write(meta={"square_matmul": matmul, "noise_rates": rates, "sigma": SIGMA})
    common.plot_series(rec.rows, args.out / "perturbed_linear.png", x="K", y="time_s",
                       facet_keys=["in_features", "batch"], title="perturbed_linear (tanh): seconds per call",
                       ylabel="seconds")


if __name__ == "__main__":
    main()
