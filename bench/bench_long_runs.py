"""Long runs with constructor defaults: XOR seeds solved, and Lorenz's test NRMSE along 2000 steps.

    python bench/bench_long_runs.py xor --optimizer dopamine --coding 01 --hidden 2,4,8,16 --seeds 20
    python bench/bench_long_runs.py lorenz --optimizer wp --seeds 3 --option lr=0.04 --option max_grad_norm=20

XOR: ``Linear(2, H) - Tanh - Linear(H, 1)``, MSE, 0/1 or +-1 coding, 3000 steps through ``df.Population`` (the
drop-in rule batched: same noise and update), solved when all four outputs lie on the right side of the middle.
Lorenz: the built-in task, a 64-unit RNN (``--hidden``), K = 16 antithetic, sigma 1e-3, minibatches of 128, 2000
steps; test NRMSE every 500 steps (``--log-every``), printed as it comes. ``--paper``: the paper's sizes instead, a
512-unit RNN on the full training set (3468 windows) each step, on ``--device`` (a GPU run). One CPU thread; the
numbers in docs/algorithm.md came from these loops.

    python bench/bench_long_runs.py lorenz --paper --device cuda --seeds 1 --log-every 250
    python bench/bench_long_runs.py lorenz --hidden 64,128,256,512 --seeds 1 --steps 500 --log-every 100
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dopamine_fast as df  # noqa: E402
from dopamine_fast.experiments.runner import train  # noqa: E402
from dopamine_fast.tasks import get_task  # noqa: E402

CLASSES = {"dopamine": df.Dopamine, "wp": df.WeightPerturbation}


def xor_solved(cls, coding, hidden, seed, steps, options) -> bool:
    torch.manual_seed(seed)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    if coding == "pm":
        x, y = 2 * x - 1, 2 * y - 1
    model = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    opt = cls(model.parameters(), seed=seed, **options)
    population = df.Population(model, loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            opt.step(population=population, inputs=x, targets=y)
    with torch.no_grad():
        out = model(x)
    middle = 0.5 if coding == "01" else 0.0
    return math.isfinite(float(out.sum())) and bool(((out > middle) == (y > middle)).all())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["xor", "lorenz"])
    parser.add_argument("--optimizer", choices=sorted(CLASSES), default="dopamine")
    parser.add_argument("--coding", choices=["01", "pm"], default="01")
    parser.add_argument("--hidden", help="hidden sizes (default: 2,4,8,16 on XOR, 64 on Lorenz; --paper: 512)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="default: 3000 on XOR, 2000 on Lorenz")
    parser.add_argument("--option", action="append", default=[], help="constructor option KEY=VALUE")
    parser.add_argument("--paper", action="store_true", help="Lorenz at the paper's sizes: 512 hidden, full batch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Lorenz)")
    parser.add_argument("--log-every", type=int, default=500, help="steps between Lorenz's test NRMSE lines")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    hiddens = [int(h) for h in (args.hidden or ("2,4,8,16" if args.task == "xor" else
                                                 "512" if args.paper else "64")).split(",")]
    if args.task == "xor":
        for hidden in hiddens:
            start = time.perf_counter()
            solved = sum(xor_solved(CLASSES[args.optimizer], args.coding, hidden, s, args.steps or 3000, options)
                         for s in seeds)
            print(f"{args.optimizer} {options} XOR {args.coding} 2-{hidden}-1: solved {solved}/{len(seeds)} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        return 0
    task = get_task("lorenz").to(args.device)
    batch_size = 0 if args.paper else 128
    hp = {"sigma": 1e-3, "num_perturbations": 16, "antithetic": True, **options}
    steps = args.steps or 2000
    for hidden, seed in ((h, s) for h in hiddens for s in seeds):
        name = f"{args.optimizer} {hp} Lorenz {hidden} hidden seed {seed}"

        def show(row, name=name):
            print(f"{name}: step {row['step']} test NRMSE {row['test_error']:.4f} train loss {row['train_loss']:.4g} "
                  f"({row['train_s']:.0f} s)", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = train(task, args.optimizer, hp, steps=steps, seed=seed, hidden=hidden, batch_size=batch_size,
                      log_points=max(1, steps // args.log_every), on_log=show)
        points = " ".join(f"{row['step']}:{row['test_error']:.4f}" for row in r.curve[1:])
        print(f"{name}: test NRMSE {points} (persistence {task.persistence_nrmse:.4f}){' DIVERGED' * r.diverged}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
