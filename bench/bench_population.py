"""Perturbed evaluation of a population (K members + the unperturbed one) against the baselines and the floor.

For each model (MLP 3x256 as ``nn.Sequential`` and as a custom module, MLP 3x1024, RNN 512x32), batch and K: the
package through its public API, ``df.Population(model)(opt.plan(), x, y)``, on every kernel backend (full rank,
rank 1, rank 4; the ``path`` column says whether it ran fused or generic), (a) a plain loop over members,
(b) ``torch.func.vmap`` over materialised parameters,
(c) EvoTorch's evaluation of a ready population and its PGPE step, (d) evosax's ``jit(vmap)`` evaluation and its
Open-ES step, (e) the floor: one forward of the unperturbed network on all rows, and JAX's jitted floor.
Writes ``population.csv`` (times, peak memory, ratios to the floors, FLOP/s) and ``population.png``.

``--cases large_k`` runs the large populations instead: K up to 65536 (rank 1, and full rank where a call stays
short) within ``Population(max_memory=...)``, reporting members per second and the evaluated rows per second
against the floor's (one forward on LARGE_K_FLOOR_MEMBERS members' rows), and the peak against the budget. Writes
``population_large_k.csv``.

    python bench/bench_population.py [--device cuda] [--out DIR] [--quick] [--cases large_k]
"""

from __future__ import annotations

import functools

import torch

import common
import dopamine_fast as df
from dopamine_fast import use_backend
from peers import EvosaxPeer, EvoTorchPeer, evotorch_status, jax_status
from workloads import (dopamine, floor_inputs, floor_loss, loop_losses, make_workload, normals_per_evaluation,
                       vmap_losses)

SIGMA = 0.01
RANKS = (0, 1, 4)
# (model, batch, K to run): K smallest first within a (model, batch) series, which stops once a case would exceed
# the per-call limit. Most telling first, so that a spent budget cuts the least: issue 5's targets are the MLP of
# width 256 at K=1024, batch 1 and 32.
GRID = {
    "quick": [("mlp32", 4, [4, 8]), ("custom_mlp32", 4, [8]), ("rnn16", 2, [4]), ("mlp32", 1, [4, 8])],
    "cpu": [("mlp256", 32, [16, 64, 256, 1024]), ("mlp256", 1, [16, 64, 256, 1024]), ("custom_mlp256", 32, [1024]),
            ("rnn512", 32, [16, 64]), ("mlp1024", 32, [16, 64, 256]), ("mlp256", 256, [16, 64]),
            ("mlp1024", 1, [16, 64, 256]), ("rnn512", 1, [16, 64, 256]), ("mlp256", 1, [4096])],
    # On a GPU (issue 11's one short session): MLP 3x1024, K=4096, B=32 first.
    "cuda": [("mlp1024", 32, [4096]), ("mlp256", 32, [1024, 16384]), ("mlp256", 1, [1024]),
             ("rnn512", 32, [64, 1024]), ("mlp1024", 256, [4096]), ("custom_mlp256", 32, [1024])],
}
# Large populations in a budget: (model, batch, K to run, full rank up to this K, max_memory in MiB).
LARGE_K = {"quick": ("mlp32", 4, [64, 1024], 64, 1), "cpu": ("mlp256", 32, [1024, 4096, 16384, 65536], 4096, 256),
           "cuda": ("mlp256", 32, [4096, 16384, 65536, 262144], 16384, 1024)}
LARGE_K_FLOOR_MEMBERS = 1025
COLUMNS = ["model", "batch", "K", "members", "method", "backend", "rank", "path", "params"]
DERIVED = ["ratio_to_floor", "ratio_to_jax_floor", "speedup_vs_loop", "speedup_vs_vmap", "speedup_vs_evotorch",
           "matmul_gflops", "matmul_fraction", "normals"]


def materialise_gib(w, members: int) -> float:
    return members * w.num_params * 4 / 2**30


def run_case(rec, w, model, batch, k, backends, rates, matmul_rate, args):
    members = k + 1
    base = dict(model=model, batch=batch, K=k, members=members, params=w.num_params)
    device = args.device
    flops = w.matmul_flops(members * batch)
    cap_gib = 0.5 * torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 4.0
    too_big = materialise_gib(w, members) > cap_gib
    big_status = f"skipped: would materialise {materialise_gib(w, members):.1f} GiB of parameters (cap {cap_gib:.0f})"

    if rec.too_large(4.0 * members * w.x.numel() + 4.0 * members * batch * max(w.y.shape[-1], w.width),
                     method="all", **base):
        return
    xf, yf = floor_inputs(w, members)
    rec.measure((model, batch, "floor"), functools.partial(floor_loss, w, xf, yf), work=flops,
                method="floor", backend="torch", rank="", **base)
    del xf, yf

    pop = df.Population(w.model)
    for name in backends:
        for rank in RANKS:
            plan = dopamine(w, k, rank, SIGMA).plan()
            normals = normals_per_evaluation(w, members, rank)

            def evaluate(plan=plan, name=name):
                with use_backend(name):
                    return pop(plan, w.x, w.y)
            # Full rank is bound by noise generation, low rank by the matrix products: estimate both.
            estimate = normals / rates[name] + 2 * flops / matmul_rate
            rec.measure((model, batch, "population", name, rank), evaluate, work=normals + flops / 10,
                        estimate_s=estimate, method="population", backend=name, rank=rank, normals=normals,
                        path=lambda: pop.last_path, **base)

    if model.startswith("custom"):
        return  # the custom module is there to show it runs as fast as the nn.Sequential; its baselines are those
    for method, fn in (("loop", loop_losses), ("vmap", vmap_losses)):
        if method == "vmap" and too_big:
            rec.skip(big_status, method=method, backend="torch", rank="full", **base)
            continue
        rec.measure((model, batch, method), functools.partial(fn, w, members, SIGMA), work=flops + members,
                    method=method, backend="torch", rank="full", **base)

    peer_cases = (("evotorch_eval", "evaluate", EvoTorchPeer, evotorch_status()),
                  ("evotorch_pgpe_step", "pgpe_step", EvoTorchPeer, evotorch_status()),
                  ("evosax_eval", "evaluate", EvosaxPeer, jax_status(device)),
                  ("evosax_openes_step", "openes_step", EvosaxPeer, jax_status(device)),
                  ("jax_floor", "floor", EvosaxPeer, jax_status(device)))
    peers = {}
    for method, attr, cls, why in peer_cases:
        fields = dict(method=method, backend=method.split("_")[0], rank="full" if method != "jax_floor" else "",
                      **base)
        why = "--no-peers" if args.no_peers else why
        if why:
            rec.skip(f"skipped: {why}", **fields)
            continue
        if too_big and method != "jax_floor":
            rec.skip(big_status, **fields)
            continue
        series = (model, batch, method)
        # Setting a peer up samples its population (K+1 copies of the parameters): not worth it for a skip.
        if series in rec.failed or rec.out_of_time() or (rec.predicted_s(series, flops) or 0) > rec.slow_s:
            rec.measure(series, lambda: None, work=flops, **fields)  # records why it is skipped
            continue
        try:
            if cls not in peers:
                peers[cls] = cls(w, k, SIGMA) if cls is EvoTorchPeer else cls(w, k, SIGMA, not too_big)
            fn = getattr(peers[cls], attr)
        except Exception as err:  # a peer that cannot set this case up is reported, not fatal
            rec.failed[series] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
            rec.skip(rec.failed[series], **fields)
            continue
        rec.measure(series, fn, work=flops, **fields)


def run_large_k(args):
    """K up to 65536 within a memory budget: members/s, rows/s against the floor's, peak against the budget."""
    model, batch, ks, full_rank_max_k, budget_mib = LARGE_K["quick" if args.quick else args.device.type]
    columns = ["model", "batch", "K", "members", "method", "rank", "path", "max_memory_mb"]
    rec = common.Recorder("population_large_k", args, columns, ["members_per_s", "rows_vs_floor", "peak_vs_budget"],
                          slow_s=600.0)
    w = make_workload(model, batch, args.device)
    xf, yf = floor_inputs(w, LARGE_K_FLOOR_MEMBERS)
    floor = rec.measure((model, "floor"), functools.partial(floor_loss, w, xf, yf), method="floor", rank="",
                        model=model, batch=batch, K=LARGE_K_FLOOR_MEMBERS - 1, members=LARGE_K_FLOOR_MEMBERS,
                        max_memory_mb="")
    del xf, yf
    floor_rows_s = LARGE_K_FLOOR_MEMBERS * batch / floor["time_s"] if floor.get("status") == "ok" else None
    for rank in (1, 0):
        for k in ks:
            if rank == 0 and k > full_rank_max_k:
                continue
            pop = df.Population(w.model, max_memory=budget_mib * 2**20)
            plan = dopamine(w, k, rank, SIGMA).plan()
            row = rec.measure((model, "budget", rank), lambda pop=pop, plan=plan: pop(plan, w.x, w.y),
                              repeats=3 if k <= 4096 else 1,
                              work=(k + 1) * batch, method="population_budget", rank=rank, model=model, batch=batch,
                              K=k, members=k + 1, max_memory_mb=budget_mib, path=lambda pop=pop: pop.last_path)
            if row.get("status") == "ok":
                row["members_per_s"] = (k + 1) / row["time_s"]
                row["rows_vs_floor"] = (k + 1) * batch / row["time_s"] / floor_rows_s if floor_rows_s else None
                row["peak_vs_budget"] = row["peak_mb"] / budget_mib
    rec.write(meta={"sigma": SIGMA, "floor_members": LARGE_K_FLOOR_MEMBERS, "max_memory_mb": budget_mib})


def add_ratios(rows, matmul_rate, workloads):
    """Ratios between methods of the same (model, batch, K), and the FLOP/s of each evaluation."""
    by_case = {}
    for r in common.ok_rows(rows):
        by_case.setdefault((r["model"], r["batch"], r["K"]), {})[(r["method"], r["backend"], r["rank"])] = r
    for (model, batch, k), case in by_case.items():
        def t(method, backend):
            r = case.get((method, backend, "full" if method != "floor" and method != "jax_floor" else ""))
            return r["time_s"] if r else None
        floor, jax_floor = t("floor", "torch"), t("jax_floor", "jax")
        loop, vmap_t, evo = t("loop", "torch"), t("vmap", "torch"), t("evotorch_eval", "evotorch")
        flops = workloads[model].matmul_flops((int(k) + 1) * int(batch))
        for r in case.values():
            s = r["time_s"]
            r["ratio_to_floor"] = s / floor if floor else None
            r["ratio_to_jax_floor"] = s / jax_floor if jax_floor else None
            r["speedup_vs_loop"] = loop / s if loop else None
            r["speedup_vs_vmap"] = vmap_t / s if vmap_t else None
            r["speedup_vs_evotorch"] = evo / s if evo else None
            if "step" not in r["method"]:
                r["matmul_gflops"] = flops / s / 1e9
                r["matmul_fraction"] = flops / s / matmul_rate


def main():
    args = common.parse_args(__doc__.splitlines()[0], budget_s=290, cuda_budget_s=90)
    if args.cases == "large_k":
        run_large_k(args)
        return
    grid = GRID["quick" if args.quick else args.device.type]
    if args.cases:
        grid = [(model, batch, ks) for (model, batch), ks in common.model_cases(args.cases).items()]
    names = common.kernel_backends("perturbed_linear", args.device, args.backends)
    # On the CPU the peers' steps take seconds at K=1024 (issue 5 measured 2-8 s), and they are the targets.
    slow_s = 0.5 if args.quick else 3.0 if args.device.type == "cpu" else 1.0
    rec = common.Recorder("population", args, COLUMNS, DERIVED, slow_s=slow_s)
    matmul = common.matmul_flops(args.device)
    rates = common.noise_rates(args.device, names)
    print(f"backends {names}; noise rates {rates}; square matmul {matmul['flops'] / 1e9:.1f} GFLOP/s", flush=True)
    workloads = {}
    for model, batch, ks in grid:
        w = make_workload(model, batch, args.device)
        workloads.setdefault(model, w)
        for k in ks:
            print(f"{model} batch={batch} K={k}", flush=True)
            run_case(rec, w, model, batch, k, names, rates, matmul["flops"], args)
    add_ratios(rec.rows, matmul["flops"], workloads)
    peers = {"evotorch": evotorch_status() or f"evotorch {common.module_version('evotorch')}",
             "evosax": jax_status(args.device) or f"evosax {common.module_version('evosax')}, "
                                                  f"jax {common.module_version('jax')}"}
    rec.write(meta={"square_matmul": matmul, "noise_rates": rates, "sigma": SIGMA, "peers": peers})
    common.plot_series(rec.rows, args.out / "population.png", x="K", y="ratio_to_floor",
                       facet_keys=["model", "batch"], title="Population evaluation: time / floor time",
                       ylabel="time / floor")


if __name__ == "__main__":
    main()
