"""The ``dopamine-fast`` command line: train one optimizer on a built-in task, or compare several.

    dopamine-fast train --task lorenz --optimizer dopamine --hidden 64 --steps 200
    dopamine-fast compare --task xor --optimizers wp,dopamine,adam --seeds 5
    dopamine-fast list

Every argument is checked (names, sizes, device, budget) before any training starts.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .backends import ORDER, use_backend
from .experiments import DESCRIPTIONS, OPTIMIZERS, available_optimizers, compare, hparams_for, train, write_compare
from .experiments.optimizers import build_stepper
from .experiments.report import format_table, plot_run, write_csv
from .tasks import TASKS, get_task, task_options

# Budgets when none is given: enough to see learning on the CPU in about a minute at the default sizes.
DEFAULT_STEPS = {"xor": 1000, "chaotic": 100}
DEFAULT_EVALUATIONS = {"xor": 9000, "chaotic": 900}

# Command-line flags that become task options (get_task rejects the ones a task does not take).
TASK_FLAGS = {"length": int, "lookback": int, "horizon": int, "train_size": int, "test_size": int,
              "noise": float, "activation": str, "threshold": float}


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _optimizer_list(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown optimizer(s) {', '.join(unknown) or '(none given)'}; "
                                         f"valid optimizers: {', '.join(OPTIMIZERS)}")
    return names


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=list(TASKS), help="built-in task")
    p.add_argument("--hidden", type=_positive_int, help="hidden units (default: the task's)")
    p.add_argument("--batch-size", type=_non_negative_int, default=0,
                   help="training samples per step; 0 (default) = the whole training set")
    p.add_argument("--sigma", type=_positive_float, help="perturbation scale (perturbation optimizers)")
    p.add_argument("--num-perturbations", type=_positive_int, help="perturbations per step, K")
    p.add_argument("--antithetic", action="store_true", default=None, help="perturb in +/- pairs")
    p.add_argument("--rank", type=_non_negative_int, help="low-rank noise of this rank (0 = full rank)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--backend", default="auto", choices=("auto",) + ORDER,
                   help="force one kernel backend for every op (default: the fastest available)")
    p.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (1 is much faster on a busy machine, where idle threads spin)")
    p.add_argument("--log-points", type=_positive_int, default=50, help="test evaluations along the curve")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<task>-...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group("task options (only those the task takes)")
    for flag, kind in TASK_FLAGS.items():
        group.add_argument("--" + flag.replace("_", "-"), type=_positive_float if kind is float else
                           (_positive_int if kind is int else str), dest="task_" + flag)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dopamine-fast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train one optimizer on a task: progress bar, table, CSV and plot")
    _add_common(tr)
    tr.add_argument("--optimizer", required=True, choices=list(OPTIMIZERS))
    tr.add_argument("--steps", type=_positive_int, help="optimizer steps (default depends on the task)")
    tr.add_argument("--seed", type=_non_negative_int, default=0)
    tr.add_argument("--lr", type=_positive_float, help="learning rate (initial one for Dopamine)")

    cmp = sub.add_parser("compare", help="several optimizers over several seeds at an equal evaluation budget")
    _add_common(cmp)
    cmp.add_argument("--optimizers", type=_optimizer_list, default=None,
                     help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: all available)")
    cmp.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (0, 1, ...)")
    cmp.add_argument("--evaluations", type=_positive_int, help="loss evaluations per run (default by task)")

    sub.add_parser("list", help="list tasks, their options, and optimizers")
    return parser


def _device(parser, text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device: unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device: cuda was asked for but torch sees no GPU here")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: only cpu and cuda are supported, got {text!r}")
    return device


def _task(parser, args, device):
    options = {flag: getattr(args, "task_" + flag) for flag in TASK_FLAGS}
    try:
        return get_task(args.task, **options).to(device)
    except ValueError as err:
        parser.error(str(err))


def _overrides(args, name: str) -> dict:
    keys = ("sigma", "num_perturbations", "antithetic", "rank") if name in ("wp", "dopamine", "dopamine2") else ()
    values = {k: getattr(args, k) for k in keys}
    if getattr(args, "lr", None) is not None:
        values["lr"] = args.lr
    return values


def _check_budget(parser, task, names, hparams, evaluations, hidden) -> None:
    """Refuse a budget smaller than one step of some optimizer, before any run starts."""
    for name in names:
        try:
            stepper = build_stepper(name, task.build_model(hidden), task, hparams[name], seed=0)
        except (TypeError, ValueError) as err:
            parser.error(f"{name}: {err}")
        if evaluations < stepper.evaluations_per_step:
            parser.error(f"--evaluations {evaluations} is less than one {name} step "
                         f"({stepper.evaluations_per_step} loss evaluations)")


def _missing(names) -> List[str]:
    return [n for n in names if n not in available_optimizers()]


def _cmd_list() -> int:
    print("tasks:")
    for name in TASKS:
        print(f"  {name:13s} options: {', '.join(task_options(name))}")
    print("optimizers:")
    for name in OPTIMIZERS:
        note = "" if name in available_optimizers() else "  [not installed]"
        print(f"  {name:10s} {DESCRIPTIONS[name]}{note}")
    return 0


def _cmd_train(parser, args, task, device) -> int:
    hp = hparams_for(task.family, args.optimizer, **_overrides(args, args.optimizer))
    steps = args.steps or DEFAULT_STEPS[task.family]
    out = args.out or Path("runs") / f"{task.name}-{args.optimizer}-seed{args.seed}"
    print(f"{task.describe()}\noptimizer {args.optimizer} {hp}, {steps} steps, device {device}, "
          f"backend {args.backend}")
    result = train(task, args.optimizer, hp, steps=steps, seed=args.seed, hidden=args.hidden,
                   batch_size=args.batch_size, log_points=args.log_points, progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result.curve, out / "curve.csv")
    plot_run(result, task.error_name, out / "curve.png")
    rows = [{"metric": k, "value": v} for k, v in result.final.items()]
    rows += [{"metric": "steps", "value": result.steps}, {"metric": "loss evaluations", "value": result.evaluations},
             {"metric": "evaluations to threshold", "value": result.evals_to_threshold or "not reached"},
             {"metric": "train seconds", "value": result.train_s},
             {"metric": "peak memory MiB", "value": result.peak_mem_mb}]
    if result.diverged:
        rows.append({"metric": "diverged", "value": "yes: the loss stopped being finite"})
    print(format_table(rows, ["metric", "value"]))
    print(f"wrote {out / 'curve.csv'} and {out / 'curve.png'}")
    return 0


def _cmd_compare(parser, args, task, device) -> int:
    names = args.optimizers or available_optimizers()
    if _missing(names):
        parser.error(f"--optimizers: {', '.join(_missing(names))} needs the evotorch package (pip install evotorch)")
    evaluations = args.evaluations or DEFAULT_EVALUATIONS[task.family]
    hparams = {n: hparams_for(task.family, n, **_overrides(args, n)) for n in names}
    _check_budget(parser, task, names, hparams, evaluations, args.hidden)
    out = args.out or Path("runs") / f"compare-{task.name}"
    print(f"{task.describe()}\n{len(names)} optimizers x {args.seeds} seeds, {evaluations} loss evaluations each, "
          f"device {device}, backend {args.backend}")
    start = time.perf_counter()
    results = compare(task, names, range(args.seeds), evaluations, hidden=args.hidden, batch_size=args.batch_size,
                      log_points=args.log_points, overrides={n: _overrides(args, n) for n in names},
                      progress=not args.no_progress)
    paths = write_compare(results, task, out)
    print(paths["table"].read_text(), end="")
    print(f"threshold: {task.error_name} <= {task.threshold:.4g}; took {time.perf_counter() - start:.1f} s")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _cmd_list()
    if args.command == "train" and args.optimizer not in available_optimizers():
        parser.error(f"--optimizer {args.optimizer} needs the evotorch package (pip install evotorch)")
    device = _device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = _task(parser, args, device)
    backend = None if args.backend == "auto" else args.backend
    with use_backend(backend) if backend else contextlib.nullcontext():
        if args.command == "train":
            return _cmd_train(parser, args, task, device)
        return _cmd_compare(parser, args, task, device)


if __name__ == "__main__":
    sys.exit(main())
