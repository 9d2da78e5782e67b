"""The ``dopamine-fast`` command line: train one optimizer on a built-in task, or compare several.

    dopamine-fast train --task lorenz --optimizer dopamine --hidden 64 --steps 200
    dopamine-fast compare --task xor --optimizers wp,dopamine,adam --seeds 5
    dopamine-fast list

Every argument is checked (names, sizes, device, backend, output folder, the optimizer's own settings) before
any training starts, and so is the ``experiments`` extra that train and compare need (plots, progress bars, the
chaotic tasks): a missing one is an error that says what to install. Curves are written row by row as they are
logged; Ctrl-C (or SIGTERM) stops at the next step, keeps what was written and exits with status 130. A folder
holding an earlier run is never overwritten silently: a non-empty ``--out`` needs ``--overwrite``, default folders
are named after the options and the time, and a lock file keeps a second run out of a folder being written.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from . import _startup, backends
from ._extras import MissingExtra, require
from .backends import ORDER, use_backend
from .experiments import DESCRIPTIONS, OPTIMIZERS, available_optimizers, compare, hparams_for, train, write_compare
from .experiments.live import CsvRows, FolderBusy, FolderLock, StopOnInterrupt
from .experiments.optimizers import OPTIMIZER_CLASSES, PERTURBATION, check_settings
from .experiments.report import format_table, plot_run
from .ops import SPECS
from .tasks import TASKS, get_task, task_options
from .tasks.chaotic import GENERATORS

# Budgets when none is given: enough to see learning on the CPU in about a minute at the default sizes.
DEFAULT_STEPS = {"xor": 1000, "chaotic": 100}
DEFAULT_EVALUATIONS = {"xor": 9000, "chaotic": 900}

INTERRUPTED = _startup.INTERRUPTED  # exit status after Ctrl-C or SIGTERM

# Shortcut flags for common task options (--task-option takes every option; get_task rejects what a task lacks).
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
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text}")
    return value


def _key_value(text: str) -> Tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _literal(text: str):
    """A Python literal (number, tuple, True, None) when the text is one (true and false in any case are the
    booleans), else the text itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    return Path(text)


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
    p.add_argument("--lr", type=_positive_float, help="learning rate (the base rate for Dopamine)")
    p.add_argument("--sigma", type=_positive_float, help="perturbation scale (perturbation optimizers)")
    p.add_argument("--num-perturbations", type=_positive_int, help="perturbations per step, K")
    p.add_argument("--antithetic", action=argparse.BooleanOptionalAction, default=None,
                   help="perturb in +/- pairs (default: the optimizer's setting)")
    p.add_argument("--rank", type=_non_negative_int, help="low-rank noise of this rank (0 = full rank)")
    p.add_argument("--optimizer-option", type=_key_value, action="append", default=[], metavar="[NAME.]KEY=VALUE",
                   help="any keyword of the optimizer's constructor (repeatable; NAME. limits it to one optimizer "
                        "of a comparison); `dopamine-fast list` shows them")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--backend", default="auto", choices=("auto",) + ORDER,
                   help="force one kernel backend for every op (default: the fastest available)")
    p.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (1 is much faster on a busy machine, where idle threads spin)")
    p.add_argument("--log-points", type=_positive_int, default=50, help="test evaluations along the curve")
    p.add_argument("--out", type=_folder, help="output folder (default: runs/<task>-<optimizer>-<options>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds files already")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stdout is not a "
                   "terminal)")
    group = p.add_argument_group("task options (only those the task takes; `dopamine-fast list` shows them)")
    group.add_argument("--task-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="any option of the task, e.g. rho=20 for lorenz (repeatable)")
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
    tr.add_argument("--distributed", nargs="?", const="members", choices=("members", "data"),
                    help="be one rank of a torchrun job: share the members (default) or the batch over the ranks, "
                         "checkpoint to --out and resume from it (docs/scaling.md)")
    tr.add_argument("--checkpoint-every", type=_positive_int, default=100,
                    help="with --distributed: steps between checkpoints (default 100)")

    cmp = sub.add_parser("compare", help="several optimizers over several seeds at an equal evaluation budget")
    _add_common(cmp)
    cmp.add_argument("--optimizers", type=_optimizer_list, default=None,
                     help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: all available)")
    cmp.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (0, 1, ...)")
    cmp.add_argument("--evaluations", type=_positive_int, help="loss evaluations per run (default by task)")

    sub.add_parser("list", help="list tasks and optimizers with the options each accepts")
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


def _task_option_default(task: str, key: str):
    for fn in (TASKS[task], GENERATORS.get(task)):
        spec = inspect.signature(fn).parameters.get(key) if fn is not None else None
        if spec is not None and spec.default is not inspect.Parameter.empty:
            return spec.default
    return None


def _task_option_value(parser, task: str, key: str, text: str):
    """``text`` as the type of the option's default (a literal where the default tells nothing)."""
    default = _task_option_default(task, key)
    kind = type(default) if isinstance(default, (int, float, str)) and not isinstance(default, bool) else None
    try:
        value = kind(text) if kind is not None else _literal(text)
    except ValueError:
        parser.error(f"--task-option {key}: expected {kind.__name__} like the default {default!r}, got {text!r}")
    if isinstance(value, float) and not math.isfinite(value):
        parser.error(f"--task-option {key}: expected a finite number, got {text!r}")
    return value


def _task(parser, args, device):
    options = {flag: getattr(args, "task_" + flag) for flag in TASK_FLAGS}
    for key, text in args.task_option:
        if options.get(key) is not None:
            parser.error(f"--task-option {key} is given twice (or also as --{key.replace('_', '-')})")
        options[key] = _task_option_value(parser, args.task, key, text)
    try:
        return get_task(args.task, **options).to(device)
    except (TypeError, ValueError) as err:
        parser.error(str(err))


def _check_backend(parser, backend: Optional[str], device: torch.device) -> None:
    """A forced backend must run every op on the device, or the run would fail at its first step."""
    if backend is None:
        return
    with use_backend(backend):
        for op in SPECS:
            try:
                backends.select(op, device)
            except RuntimeError as err:
                parser.error(f"--backend {backend}: cannot run on {device}: {err}")


def _output_folder(parser, out: Path, overwrite: bool, held: Optional[contextlib.ExitStack]) -> Path:
    """The output folder, created, checked writable and locked before any training (a run must not be lost at the
    end, nor overwrite another); ``held`` keeps the lock until the command ends (None: no lock). ``overwrite``:
    files there may be replaced."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out: cannot create the folder {out}: {err.strerror or err}")
    if not os.access(out, os.W_OK | os.X_OK):
        parser.error(f"--out: cannot write into {out}")
    if held is not None:
        try:
            held.enter_context(FolderLock(out))
        except FolderBusy as err:
            parser.error(f"--out: {err}; wait for it to end or choose another folder")
    earlier = sorted(p.name for p in out.iterdir() if p.name != FolderLock.NAME)
    if earlier and not overwrite:
        parser.error(f"--out: {out} already holds {', '.join(earlier[:5])}{' ...' if len(earlier) > 5 else ''}; "
                     f"pass --overwrite to replace them, or choose another folder")
    return out


def _default_folder(args, name: str) -> Path:
    """``runs/<task>-<name>-<options given>-<time>``, with a counter if that exists: never an earlier run's."""
    given = {k: getattr(args, k) for k in ("hidden", "batch_size", "lr", "sigma", "num_perturbations", "rank")}
    parts = [f"{k.replace('_', '-')}{v:g}" if isinstance(v, float) else f"{k.replace('_', '-')}{v}"
             for k, v in given.items() if v]
    if args.antithetic is not None:
        parts.append("antithetic" if args.antithetic else "no-antithetic")
    parts += [f"{k}{v}" for k, v in args.optimizer_option + args.task_option]
    parts += [f"{flag.replace('_', '-')}{getattr(args, 'task_' + flag)}" for flag in TASK_FLAGS
              if getattr(args, "task_" + flag) is not None]
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-".join([args.task, name, *parts, time.strftime("%Y%m%d-%H%M%S")]))
    folder, count = Path("runs") / stem, 1
    while folder.exists():
        count += 1
        folder = Path("runs") / f"{stem}-{count}"
    return folder


def _overrides(args, name: str) -> dict:
    keys = ("sigma", "num_perturbations", "antithetic", "rank") if name in PERTURBATION else ()
    values = {k: getattr(args, k) for k in keys}
    if args.lr is not None:
        values["lr"] = args.lr
    for key, text in args.optimizer_option:
        target, dot, key = key.rpartition(".")
        if not dot or target == name:
            values[key] = _literal(text)
    return values


def _check_optimizer_names(parser, args, names) -> None:
    for key, _ in args.optimizer_option:
        target, dot, _ = key.rpartition(".")
        if dot and target not in names:
            parser.error(f"--optimizer-option {key}: {target} is not an optimizer of this run ({', '.join(names)})")


def _check_settings(parser, names, hparams) -> dict:
    """Each optimizer's settings checked by its own constructor, as usage errors before any run; returns the loss
    evaluations one step of each costs."""
    per_step = {}
    for name in names:
        try:
            per_step[name] = check_settings(name, hparams[name])
        except (TypeError, ValueError) as err:
            parser.error(f"{name}: {err}")
    return per_step


def _check_budget(parser, names, hparams, evaluations) -> None:
    """Refuse a budget smaller than one step of some optimizer, before any run starts."""
    for name, per_step in _check_settings(parser, names, hparams).items():
        if evaluations < per_step:
            parser.error(f"--evaluations {evaluations} is less than one {name} step ({per_step} loss evaluations)")


def _require_extras(parser, args) -> None:
    """What train and compare need beyond torch (the ``experiments`` extra), checked before any work: a missing
    module is a usage error naming the package to install, not a traceback after training."""
    needs = {"matplotlib": "the plots", "tqdm.auto": "the progress bars"}
    if args.task in GENERATORS:
        needs["numpy"] = "the chaotic tasks"
    for module, needed_by in needs.items():
        try:
            require(module, needed_by)
        except MissingExtra as err:
            parser.error(str(err))


def _check_evotorch(parser, names) -> None:
    """PGPE needs EvoTorch to import, not only to be installed: a broken installation is a usage error too."""
    if "pgpe" not in names or "pgpe" not in available_optimizers():
        return  # not asked for, or not installed (which _missing reports)
    try:
        importlib.import_module("evotorch.algorithms.functional")
    except Exception as err:  # noqa: BLE001  (whatever a broken installation raises)
        parser.error(f"pgpe needs evotorch, which is installed but fails to import ({type(err).__name__}: {err}); "
                     f"reinstall it (pip install --force-reinstall evotorch)")


def _missing(names) -> List[str]:
    return [n for n in names if n not in available_optimizers()]


def _optimizer_options(name: str) -> List[str]:
    """The constructor keywords of a perturbation optimizer (what --optimizer-option accepts); [] for the others."""
    if name not in PERTURBATION:
        return []
    cls = OPTIMIZER_CLASSES[name]
    skip = {"self", "params", "seed", "process_group"}  # the seed comes from --seed, the group from --distributed
    return [p for p in inspect.signature(cls).parameters if p not in skip]


def _cmd_list() -> int:
    print("tasks (options: --task-option KEY=VALUE, shown with their defaults):")
    for name in TASKS:
        options = ", ".join(f"{k}={_task_option_default(name, k)!r}" for k in task_options(name))
        print(f"  {name:13s} {options}")
    print("optimizers (options: --optimizer-option KEY=VALUE):")
    for name in OPTIMIZERS:
        note = "" if name in available_optimizers() else "  [not installed]"
        print(f"  {name:10s} {DESCRIPTIONS[name]}{note}")
        if _optimizer_options(name):
            print(f"  {'':10s} options: {', '.join(_optimizer_options(name))}")
    return 0


def _cmd_train(parser, args, task, device, held) -> int:
    hp = hparams_for(task.family, args.optimizer, **_overrides(args, args.optimizer))
    steps = args.steps or DEFAULT_STEPS[task.family]
    _check_optimizer_names(parser, args, [args.optimizer])
    _check_settings(parser, [args.optimizer], {args.optimizer: hp})
    name = f"{args.optimizer}-seed{args.seed}"
    if args.distributed:  # the ranks share one folder, named alike by all, and resume from its checkpoint
        out = _output_folder(parser, args.out or Path("runs") / f"{task.name}-{name}", True, None)
        return _cmd_train_distributed(parser, args, task, hp, steps, out)
    out = _output_folder(parser, args.out or _default_folder(args, name), args.overwrite, held)
    print(f"{task.describe()}\noptimizer {args.optimizer} {hp}, {steps} steps, device {device}, "
          f"backend {args.backend}")
    with CsvRows(out / "curve.csv") as rows, StopOnInterrupt() as stop:
        result = train(task, args.optimizer, hp, steps=steps, seed=args.seed, hidden=args.hidden,
                       batch_size=args.batch_size, log_points=args.log_points, progress=_progress(args),
                       on_log=rows, stop=stop)
    plot_run(result, task.error_name, out / "curve.png")
    if stop.requested:
        print(f"interrupted after step {result.steps} of {steps}; wrote {out / 'curve.csv'} and "
              f"{out / 'curve.png'}", file=sys.stderr)
        return INTERRUPTED
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


def _cmd_train_distributed(parser, args, task, hp, steps, out) -> int:
    from .distributed.launch import train_distributed
    if args.optimizer not in PERTURBATION:
        parser.error(f"--distributed runs the perturbation optimizers ({', '.join(PERTURBATION)}); "
                     f"use torch's DistributedDataParallel for {args.optimizer}")
    try:
        summary = train_distributed(task, args.optimizer, hp, steps=steps, seed=args.seed, hidden=args.hidden,
                                    batch_size=args.batch_size, mode=args.distributed,
                                    checkpoint_every=args.checkpoint_every, out=out)
    except ValueError as err:
        parser.error(str(err))
    if int(os.environ.get("RANK", 0)) == 0:
        print(format_table([{"metric": k, "value": v} for k, v in summary.items()], ["metric", "value"]))
        print(f"wrote {out / 'weights.pt'} and {out / 'checkpoint.pt'}")
    return 0


def _cmd_compare(parser, args, task, device, held) -> int:
    names = args.optimizers or available_optimizers()
    if _missing(names):
        parser.error(f"--optimizers: {', '.join(_missing(names))} needs the evotorch package (pip install evotorch)")
    evaluations = args.evaluations or DEFAULT_EVALUATIONS[task.family]
    _check_optimizer_names(parser, args, names)
    hparams = {n: hparams_for(task.family, n, **_overrides(args, n)) for n in names}
    _check_budget(parser, names, hparams, evaluations)
    out = _output_folder(parser, args.out or _default_folder(args, f"compare-{'-'.join(names)}-seeds{args.seeds}"),
                         args.overwrite, held)
    print(f"{task.describe()}\n{len(names)} optimizers x {args.seeds} seeds, {evaluations} loss evaluations each, "
          f"device {device}, backend {args.backend}")
    start = time.perf_counter()
    with CsvRows(out / "compare_curves.csv") as rows, StopOnInterrupt() as stop:
        results = compare(task, names, range(args.seeds), evaluations, hidden=args.hidden,
                          batch_size=args.batch_size, log_points=args.log_points,
                          overrides={n: _overrides(args, n) for n in names}, progress=_progress(args),
                          on_log=rows, stop=stop)
    paths = write_compare(results, task, out)
    if stop.requested:
        print(f"interrupted during run {len(results)} of {len(names) * args.seeds}; wrote what exists to {out}",
              file=sys.stderr)
        return INTERRUPTED
    print(paths["table"].read_text(), end="")
    print(f"threshold: {task.error_name} <= {task.threshold:.4g}; took {time.perf_counter() - start:.1f} s")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _progress(args) -> bool:
    """Progress bars only for a person watching: not with --no-progress, nor when stdout is a file or a pipe."""
    return not args.no_progress and sys.stdout.isatty()


def main(argv: Optional[List[str]] = None) -> int:
    _startup.hand_over()
    with contextlib.ExitStack() as held:  # the output folder's lock, released however the command ends
        if threading.current_thread() is threading.main_thread():  # SIGTERM as Ctrl-C, for this command only
            held.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, signal.default_int_handler))
        try:
            return _main(argv, held)
        except KeyboardInterrupt:  # a second Ctrl-C, or one before training: the rows written so far stay on disk
            print("interrupted", file=sys.stderr)
            return INTERRUPTED


def _main(argv: Optional[List[str]], held: contextlib.ExitStack) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _cmd_list()
    _require_extras(parser, args)
    if args.command == "train" and args.optimizer not in available_optimizers():
        parser.error(f"--optimizer {args.optimizer} needs the evotorch package (pip install evotorch)")
    _check_evotorch(parser, [args.optimizer] if args.command == "train" else args.optimizers or available_optimizers())
    device = _device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = None if args.backend == "auto" else args.backend
    _check_backend(parser, backend, device)
    task = _task(parser, args, device)
    with use_backend(backend):
        if args.command == "train":
            return _cmd_train(parser, args, task, device, held)
        return _cmd_compare(parser, args, task, device, held)


if __name__ == "__main__":
    sys.exit(main())
