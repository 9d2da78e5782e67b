"""Defaults, where users try them first: each case over 20 seeds with the optimizer's defaults, no tuning.

    python bench/bench_defaults.py --threads 1                  # writes bench/results/defaults_cpu/
    python bench/bench_defaults.py --seeds 3 --out /tmp/defaults  # a quick check
    python bench/bench_defaults.py --steps 5000 --optimizers dopamine --out DIR   # issue 18's long runs

A seed *diverged* when its last loss is not finite, above its first, or the divergence guard fired; *trained* when
its last loss is below half its first; *rose late* when its training loss's EMA ended more than 1.5x above its
minimum (``report.late_rise``). Cases: the README's two snippets, XOR 2-2-1 and 2-8-1 in +-1 coding (tanh output),
XOR 2-H-1 in 0/1 coding (linear output) for H = 2, 4, 8, 16, two moons with cross-entropy, and the five built-in
tasks at their family defaults (``dopamine-fast train``'s), with Dopamine and, beside it, WeightPerturbation's
defaults. ``--steps`` replaces every case's own step count.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import dopamine_fast as df  # noqa: E402
from dopamine_fast.experiments import hparams_for, train  # noqa: E402
from dopamine_fast.experiments.report import format_table, late_rise, write_csv  # noqa: E402
from dopamine_fast.tasks import get_task  # noqa: E402
from dopamine_fast.tasks.moons import two_moons  # noqa: E402

XOR_X = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[-1.0], [1.0], [1.0], [-1.0]])
XOR01_X, XOR01_Y = (XOR_X + 1) / 2, (XOR_Y + 1) / 2
OPTIMIZERS = {"dopamine": df.Dopamine, "wp": df.WeightPerturbation}


def closure_run(cls, model, loss_fn, steps, seed):
    opt = cls(model.parameters(), seed=seed)
    return [opt.step(lambda: loss_fn(model)) for _ in range(steps)]


def xor_case(hidden, final_tanh, coding="pm"):
    x, y = (XOR_X, XOR_Y) if coding == "pm" else (XOR01_X, XOR01_Y)

    def run(cls, seed, steps):
        torch.manual_seed(seed)
        layers = [nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1)] + ([nn.Tanh()] if final_tanh else [])
        return closure_run(cls, nn.Sequential(*layers), lambda m: ((m(x) - y) ** 2).mean(), steps, seed)
    return run


def moons_run(cls, seed, steps):
    torch.manual_seed(seed)
    x, y = two_moons(256, seed)
    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    return closure_run(cls, model, lambda m: nn.functional.cross_entropy(m(x), y), steps, seed)


def readme_rnn_run(cls, seed, steps):
    """The README's fast-path snippet: an Elman RNN, 128 perturbations of rank 4, one batched pass per step."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.RNN(3, 64, batch_first=True), df.LastHidden(), nn.Linear(64, 3))
    opt = cls(model.parameters(), num_perturbations=128, rank=4, seed=seed)
    pop = df.Population(model, loss="mse")
    x = torch.randn(64, 16, 3)
    y = 3 * x.mean(1)
    return [opt.step(population=pop, inputs=x, targets=y) for _ in range(steps)]


def task_case(name, hidden, batch_size):
    def run(cls, seed, steps):
        task = get_task(name)
        opt = "dopamine" if cls is df.Dopamine else "wp"
        r = train(task, opt, hparams_for(task.family, opt), steps=steps, seed=seed, hidden=hidden,
                  batch_size=batch_size, log_points=steps)
        return [row["train_loss"] for row in r.curve]
    return run


CASES = {  # name: (run(cls, seed, steps) -> training losses, its own step count)
    "readme_drop_in_xor_2-8-1": (xor_case(8, False), 300),
    "readme_fast_path_rnn": (readme_rnn_run, 40),
    "xor_2-2-1": (xor_case(2, True), 300),
    "xor_2-8-1": (xor_case(8, True), 300),
    **{f"xor01_2-{h}-1": (xor_case(h, False, "01"), 3000) for h in (2, 4, 8, 16)},
    "two_moons_ce": (moons_run, 300),
    "task_xor": (task_case("xor", None, 0), 300),
    "task_noisy_xor": (task_case("noisy_xor", None, 0), 300),
    "task_lorenz": (task_case("lorenz", 32, 128), 60),
    "task_rossler": (task_case("rossler", 32, 128), 60),
    "task_mackey_glass": (task_case("mackey_glass", 32, 128), 60),
}


def run_seed(case, cls, seed, threads, steps=None):
    """One seed of one case with one optimizer: its row."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    run, own_steps = CASES[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = run(cls, seed, steps or own_steps)
    guard = any("best seen" in str(w.message) for w in caught)
    first, last = float(losses[0]), float(losses[-1])
    bad = guard or not math.isfinite(last) or last > first
    return {"case": case, "optimizer": cls.__name__, "seed": seed, "steps": len(losses), "first_loss": first,
            "last_loss": last, "late_rise": late_rise(losses), "guard_fired": guard, "diverged": bad,
            "s": round(time.perf_counter() - start, 1)}


def summarize(rows):
    """One summary row per (case, optimizer), in the order the rows first name them."""
    groups = {}
    for row in rows:
        groups.setdefault((row["case"], row["optimizer"]), []).append(row)
    summary = []
    for (case, optimizer), group in groups.items():
        lasts = [r["last_loss"] for r in group]
        rises = [r["late_rise"] for r in group]
        summary.append({
            "case": case, "optimizer": optimizer, "seeds": len(group), "steps": group[0]["steps"],
            "median first loss": statistics.median(r["first_loss"] for r in group),
            "median last loss": statistics.median(lasts), "max last loss": max(lasts),
            "trained (last < first / 2)": sum(not r["diverged"] and r["last_loss"] < 0.5 * r["first_loss"]
                                              for r in group),
            "diverged": sum(r["diverged"] for r in group), "rose late (> 1.5x)": sum(r > 1.5 for r in rises),
            "max late rise": max(rises), "s": round(sum(r["s"] for r in group), 1)})
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--cases", help=f"comma-separated (default all: {', '.join(CASES)})")
    parser.add_argument("--steps", type=int, help="steps of every case (default: each case's own)")
    parser.add_argument("--optimizers", default="dopamine,wp", help=f"comma-separated of {', '.join(OPTIMIZERS)}")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "defaults_cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.cases.split(",") if args.cases else list(CASES)
    optimizers = args.optimizers.split(",")
    unknown = [c for c in cases if c not in CASES] + [o for o in optimizers if o not in OPTIMIZERS]
    if unknown or args.seeds < 1 or args.jobs < 1 or (args.steps is not None and args.steps < 1):
        parser.error(f"unknown case(s) or optimizer(s) {unknown}; cases: {', '.join(CASES)}; optimizers: "
                     f"{', '.join(OPTIMIZERS)}; --seeds, --jobs and --steps must be >= 1")
    jobs = [(case, OPTIMIZERS[o], seed, args.threads, args.steps)
            for case in cases for o in optimizers for seed in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []

    def keep(row):  # every finished seed is on disk, so a stopped run keeps what it measured
        rows.append(row)
        write_csv(rows, args.out / "defaults_runs.csv")
        print(f"{row['case']} {row['optimizer']} seed {row['seed']}: last loss {row['last_loss']:.3g}, late rise "
              f"{row['late_rise']:.3g}, guard {row['guard_fired']}, {row['s']} s", flush=True)

    common.run_jobs(run_seed, jobs, args.jobs, on_done=keep)
    summary = summarize(rows)
    write_csv(summary, args.out / "defaults_summary.csv")
    table = format_table(summary, list(summary[0]))
    (args.out / "defaults_summary.md").write_text(
        f"# Defaults over {args.seeds} seeds\n\n`python bench/bench_defaults.py {' '.join(argv or sys.argv[1:])}`"
        f"\n\n{table}\n\n`s`: the seeds' seconds summed (each seed runs in one process).\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
