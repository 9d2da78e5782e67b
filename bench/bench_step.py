"""A whole Dopamine step (sample, evaluate K+1 members, update) against one Adam step with back-propagation.

``dopamine_step``: the public fast path, ``opt.step(population=df.Population(model), inputs=x, targets=y)``, per
backend and rank (the ``path`` column says whether the population ran fused or generic); ``dopamine_closure``:
the drop-in ``opt.step(closure)``, members one after the other in place; ``adam``: forward, backward,
``Adam.step`` on the same batch; ``floor``: one forward on all (K+1)*B rows. EvoTorch's PGPE step and evosax's
Open-ES step on the same population are in ``population.csv``; ``summarize.py`` sets them side by side. Writes
``step.csv`` and ``step.png``.

    python bench/bench_step.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F

import common
import dopamine_fast as df
from dopamine_fast import use_backend
from workloads import dopamine, floor_inputs, floor_loss, make_workload, normals_per_evaluation

RANKS = (0, 1, 4)
SIGMA = 0.05
GRID = {  # (model, batch) -> K, smallest first
    "quick": {("mlp32", 4): [4, 8], ("rnn16", 2): [4]},
    "cpu": {("mlp256", 32): [16, 64, 256, 1024], ("mlp256", 1): [16, 64, 256, 1024],
            ("custom_mlp256", 32): [1024], ("rnn512", 32): [16, 64]},
    # On a GPU (issue 11's one short session): the paper's RNN first (512 hidden, batch 5000, look-back 32).
    "cuda": {("rnn512", 5000): [16, 64], ("mlp1024", 32): [4096], ("mlp256", 32): [1024], ("mlp256", 1): [1024]},
}
COLUMNS = ["model", "batch", "K", "members", "method", "backend", "rank", "path", "normals"]
DERIVED = ["ratio_to_adam", "ratio_to_floor"]


def closure_step(w, opt):
    opt.step(lambda: F.mse_loss(w.model(w.x), w.y))


def main():
    args, grid, names, rec = common.start(__doc__, "step", "perturbed_linear", GRID, COLUMNS, DERIVED, 60, 40)
    grid = common.model_cases(args.cases) if args.cases else grid
    matmul = common.matmul_flops(args.device)
    rates = common.noise_rates(args.device, names)
    for (model, batch), ks in grid.items():
        w = make_workload(model, batch, args.device)
        trained = copy.deepcopy(w.model).requires_grad_(True)
        for rnn in (m for m in trained.modules() if isinstance(m, torch.nn.RNNBase)):
            # A deep copy leaves cuDNN's weights in separate buffers, which it compacts again on every call
            # (a warning on the GPU run): Adam's baseline would pay that copy each step.
            rnn.flatten_parameters()
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
            rec.measure((model, batch, "adam"), adam_step, method="adam", backend="torch", rank="", path="", **base)
            xf, yf = floor_inputs(w, members)
            rec.measure((model, batch, "floor"), functools.partial(floor_loss, w, xf, yf), work=flops,
                        method="floor", backend="torch", rank="", path="", **base)
            del xf, yf
            pop = df.Population(w.model)
            for name in names:
                for rank in RANKS:
                    # Twice the evaluation's normals: the update regenerates the same noise.
                    normals = 2 * normals_per_evaluation(w, members, rank)
                    opt = dopamine(w, k, rank, SIGMA)

                    def run(opt=opt, name=name):
                        with use_backend(name):
                            opt.step(population=pop, inputs=w.x, targets=w.y)
                    estimate = normals / rates[name] + 2 * flops / matmul["flops"]
                    rec.measure((model, batch, "step", name, rank), run, work=normals + flops / 10,
                                estimate_s=estimate, method="dopamine_step", backend=name, rank=rank,
                                normals=normals, path=lambda: pop.last_path, **base)
            if model.startswith("custom"):
                continue  # there to show the custom module steps as fast as the nn.Sequential
            opt = dopamine(w, k, 0, SIGMA)
            rec.measure((model, batch, "closure"), lambda: closure_step(w, opt), work=members,
                        estimate_s=members * w.num_params / rates[names[0]] if names else None,
                        method="dopamine_closure", backend="auto", rank=0, path="closure", **base)
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
