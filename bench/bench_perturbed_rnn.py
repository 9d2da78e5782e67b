"""``perturbed_rnn`` (Elman, tanh, K members + the unperturbed one) per backend, against the floor.

The floors: the plain unperturbed recurrence on all (K+1)*B sequences written out step by step (``floor``) and
``nn.RNN`` on the same rows (``nn_rnn``: MKL on the CPU, cuDNN on a GPU); ``ratio_to_floor`` divides by the
faster of the two. Writes ``perturbed_rnn.csv`` and ``perturbed_rnn.png``.

    python bench/bench_perturbed_rnn.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import common
from dopamine_fast import ops, use_backend

SIGMA = 0.01
RANKS = (0, 1, 4)
FEATURES = 3
GRID = {  # (hidden, steps, batch) -> K, smallest first
    "quick": {(19, 5, 2): [3, 8]},
    "cpu": {(512, 32, 1): [16, 64, 256], (512, 32, 32): [16, 64]},
    # On a GPU (issue 11's one short session): 512 hidden, T=32, B=256, K=64 first.
    "cuda": {(512, 32, 256): [64, 1024], (512, 32, 32): [64, 4096], (512, 32, 1): [4096]},
}
COLUMNS = ["hidden", "steps", "batch", "K", "members", "backend", "rank", "normals"]
DERIVED = ["ratio_to_floor", "gflops", "matmul_fraction"]


def floor(x, w_ih, w_hh, b_ih, b_hh):
    h = x.new_zeros(x.shape[0], w_hh.shape[0])
    for t in range(x.shape[1]):
        h = torch.tanh(F.linear(x[:, t], w_ih, b_ih) + F.linear(h, w_hh, b_hh))
    return h


def nn_rnn(w_ih, w_hh, b_ih, b_hh):
    """``nn.RNN`` with these weights, called as the floor is: the last hidden state of every sequence."""
    rnn = torch.nn.RNN(w_ih.shape[1], w_hh.shape[0], batch_first=True).to(w_hh.device).requires_grad_(False)
    for name, t in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
        getattr(rnn, name).copy_(t)

    def run(x):
        with torch.no_grad():
            return rnn(x)[1][0]
    return run


def main():
    args, grid, names, rec = common.start(__doc__, "perturbed_rnn", "perturbed_rnn", GRID, COLUMNS, DERIVED, 45, 30)
    matmul = common.matmul_flops(args.device)
    rates = common.noise_rates(args.device, names)
    gen = torch.Generator().manual_seed(0)
    for (hidden, steps, batch), ks in grid.items():
        w_ih = (torch.randn(hidden, FEATURES, generator=gen) / FEATURES**0.5).to(args.device)
        w_hh = (torch.randn(hidden, hidden, generator=gen) / hidden**0.5).to(args.device)
        b_ih, b_hh = (torch.randn(hidden, generator=gen).to(args.device) * 0.1 for _ in range(2))
        x = torch.randn(batch, steps, FEATURES, generator=gen).to(args.device)
        for k in ks:
            members = k + 1
            base = dict(hidden=hidden, steps=steps, batch=batch, K=k, members=members)
            flops = 2.0 * members * batch * steps * (w_ih.numel() + w_hh.numel())
            if rec.too_large(4.0 * members * batch * (hidden + steps * FEATURES), backend="all", **base):
                continue
            xf = x.expand(members, *x.shape).reshape(-1, steps, FEATURES).contiguous()
            rec.measure((hidden, batch, "floor"), lambda: floor(xf, w_ih, w_hh, b_ih, b_hh), work=flops,
                        backend="floor", rank="", **base)
            rnn = nn_rnn(w_ih, w_hh, b_ih, b_hh)
            rec.measure((hidden, batch, "nn_rnn"), lambda: rnn(xf), work=flops, backend="nn_rnn", rank="", **base)
            for name in names:
                for rank in RANKS:
                    normals = k * (ops.low_rank_numel(w_ih.shape, rank) + ops.low_rank_numel(w_hh.shape, rank)
                                   + 2 * hidden)

                    def run(name=name, rank=rank):
                        with use_backend(name):
                            return ops.perturbed_rnn(x, None, w_ih, w_hh, b_ih, b_hh, 5, 0, [0, 1, 2, 3], SIGMA,
                                                     members, rank)
                    estimate = normals / rates[name] + 2 * flops / matmul["flops"]
                    rec.measure((hidden, batch, name, rank), run, work=normals + flops / 10, estimate_s=estimate,
                                backend=name, rank=rank, normals=normals, **base)
    floors = {}
    for r in common.ok_rows(rec.rows):
        if r["backend"] in ("floor", "nn_rnn"):
            key = (r["hidden"], r["steps"], r["batch"], r["K"])
            floors[key] = min(floors.get(key, r["time_s"]), r["time_s"])
    for r in common.ok_rows(rec.rows):
        f = floors.get((r["hidden"], r["steps"], r["batch"], r["K"]))
        r["ratio_to_floor"] = r["time_s"] / f if f else None
        r["gflops"] = 2.0 * r["members"] * r["batch"] * r["steps"] * r["hidden"] * (r["hidden"] + FEATURES) \
            / r["time_s"] / 1e9
        r["matmul_fraction"] = r["gflops"] * 1e9 / matmul["flops"]
    rec.write(meta={"square_matmul": matmul, "noise_rates": rates, "sigma": SIGMA, "features": FEATURES})
    common.plot_series(rec.rows, args.out / "perturbed_rnn.png", x="K", y="time_s", facet_keys=["hidden", "batch"],
                       title="perturbed_rnn (tanh): seconds per call", ylabel="seconds")


if __name__ == "__main__":
    main()
