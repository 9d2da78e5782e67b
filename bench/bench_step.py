"""A whole Dopamine step (sample, evaluate K+1 members, update) against one Adam step with back-propagation.

``dopamine_fused``: the members evaluated in one batched pass of the ops (``fused_losses``), then
``step_from_losses`` (the fused ``rpe_update_``), per backend and rank; ``dopamine_closure``: the drop-in
``opt.step(closure)``, members one after the other in place; ``adam``: forward, backward, ``Adam.step`` on the same
batch; ``floor``: one forward on all (K+1)*B rows. EvoTorch's PGPE step and evosax's Open-ES step on the same
population are in ``population.csv``; ``summarize.py`` sets them side by side. Writes ``step.csv`` and
``step.png``.

    python bench/bench_step.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F

import common
import dopamine_fast
from dopamine_fast import use_backend
from workloads import floor_inputs, floor_loss, fused_losses, make_workload, normals_per_evaluation

RANKS = (0, 1, 4)
SIGMA = 0.05
GRID = {  # (model, batch) -> K, smallest first
    "quick": {("mlp32", 4): [4, 8]},
    "cpu": {("mlp256", 32): [16, 64, 256, 1024], ("mlp256", 1): [16, 64, 256, 1024], ("rnn512", 32): [16, 64]},
    "cuda": {(m, b): [16, 256, 1024, 4096, 16384, 65536] for m in ("mlp256", "mlp1024", "rnn512") for b in (1, 32)},
}
COLUMNS = ["model", "batch", "K", "members", "method", "backend", "rank", "normals"]
DERIVED = ["ratio_to_adam", "ratio_to_floor"]


def dopamine(w, k, rank):
    return dopamine_fast.Dopamine(w.model.parameters(), lr=1e-3, sigma=SIGMA, num_perturbations=k,
                                  antithetic=True, rank=rank, lr_min=1e-4, lr_max=1e-2)


def fused_step(w, opt):
    opt.step_from_losses(fused_losses(w, opt.plan()))


def closure_step(w, opt):
    opt.step(lambda: F.mse_loss(w.model(w.x), w.y))


def main():
    args, grid, names, rec = common.start(__doc__, "step", "perturbed_linear", GRID, COLUMNS, DERIVED, 60, 40)
    matmul = common.matmul_flops(args.device)
    rates = common.noise_rates(args.device, names)
    for (model, batch), ks in grid.items():
        w = make_workload(model, batch, args.device)
        trained = copy.deepcopy(w.model).requires_grad_(True)
        adam = torch.optim.Adam(trained.parameters(), lr=1e-3)

        def adam_step():
            adam.zero_grad(set_to_none=True)
            F.mse_loss(trained(w.x), w.y).backward()
            adam.step()
        for k in ks:
            members = k + 1
            base = dict(model=model, batch=batch, K=k, members=members)
            flops = w.matmul_flops(members * batch)
            if rec.too_large(4.0 * members * w.x.numel() + 4.0 * members * batch * w.width, method="all", **base):
                continue
            rec.measure((model, batch, "adam"), adam_step, method="adam", backend="torch", rank="", **base)
            xf, yf = floor_inputs(w, members)
            rec.measure((model, batch, "floor"), functools.partial(floor_loss, w, xf, yf), work=flops,
                        method="floor", backend="torch", rank="", **base)
            del xf, yf
            for name in names:
                for rank in RANKS:
                    # Twice the evaluation's normals: the update regenerates the same noise.
                    normals = 2 * normals_per_evaluation(w, members, rank)
                    opt = dopamine(w, k, rank)

                    def run(opt=opt, name=name):
                        with use_backend(name):
                            fused_step(w, opt)
                    estimate = normals / rates[name] + 2 * flops / matmul["flops"]
                    rec.measure((model, batch, "fused", name, rank), run, work=normals + flops / 10,
                                estimate_s=estimate, method="dopamine_fused", backend=name, rank=rank,
                                normals=normals, **base)
            opt = dopamine(w, k, 0)
            rec.measure((model, batch, "closure"), lambda: closure_step(w, opt), work=members,
                        estimate_s=members * w.num_params / rates[names[0]] if names else None,
                        method="dopamine_closure", backend="auto", rank=0, **base)
    by_case = {}
    for r in common.ok_rows(rec.rows):
        by_case.setdefault((r["model"], r["batch"], r["K"]), {})[r["method"]] = r["time_s"]
    for r in common.ok_rows(rec.rows):
        case = by_case[(r["model"], r["batch"], r["K"])]
        r["ratio_to_adam"] = r["time_s"] / case["adam"] if "adam" in case else None
        r["ratio_to_floor"] = r["time_s"] / case["floor"] if "floor" in case else None
    rec.write(meta={"square_matmul": matmul, "noise_rates": rates, "sigma": SIGMA})
    common.plot_series(rec.rows, args.out / "step.png", x="K", y="ratio_to_adam", facet_keys=["model", "batch"],
                       title="One optimizer step: time / Adam step time", ylabel="time / Adam step")


if __name__ == "__main__":
    main()
