"""Tables, CSV files and plots of runs: one learning curve, or several optimizers over several seeds."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from .._extras import require
from .runner import RunResult


def format_table(rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> str:
    """A plain-text table (GitHub markdown), numbers to four significant digits."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)
    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])


def write_csv(rows: Iterable[Dict[str, object]], path: Path) -> Path:
    rows = list(rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def late_rise(losses: Sequence[float], beta: float = 0.95, floor: float = 1e-5) -> float:
    """How far a training loss rose late: its EMA at the end over the EMA's minimum (1 when it never rose), the
    minimum counted no lower than ``floor`` times the first loss, where a loss that has converged jitters at the
    resolution of float32 finite differences (1e-6 to 1e-5 of the first loss on 2-4-1 XOR at sigma 0.05,
    measured); a loss that is not finite at the end rose without bound."""
    level, lowest = float(losses[0]), math.inf
    eps = floor * abs(level)
    for v in losses:
        level = beta * level + (1 - beta) * float(v)
        lowest = min(lowest, level)
    base = max(lowest, eps)
    if not math.isfinite(level) or (base == 0 and level > 0):
        return math.inf
    return level / base if base > 0 else 1.0


def curve_rows(result: RunResult) -> List[Dict[str, object]]:
    return [{"task": result.task, "optimizer": result.optimizer, "seed": result.seed, **row} for row in result.curve]


def run_row(result: RunResult) -> Dict[str, object]:
    """One run's outcome: final metrics, budget, evaluations to threshold, time and memory."""
    return {"task": result.task, "optimizer": result.optimizer, "seed": result.seed, "steps": result.steps,
            "evaluations": result.evaluations, **{k: v for k, v in result.final.items()},
            "evals_to_threshold": result.evals_to_threshold, "train_s": result.train_s,
            "peak_mem_mb": result.peak_mem_mb, "diverged": result.diverged}


def _mean_std(values: List[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {std:.2g}"


def summary_rows(results: Sequence[RunResult], error_name: str) -> List[Dict[str, object]]:
    """Per optimizer over seeds: mean ± std of the final test error, the share of seeds that reached the
    threshold and the median evaluations they needed, time and memory."""
    by_opt: Dict[str, List[RunResult]] = defaultdict(list)
    for r in results:
        by_opt[r.optimizer].append(r)
    rows = []
    for opt, runs in by_opt.items():
        reached = [r.evals_to_threshold for r in runs if r.reached]
        extra = {}
        if "free_run_nrmse" in runs[0].final:
            extra["free-run NRMSE"] = _mean_std([r.final["free_run_nrmse"] for r in runs])
        rows.append({"optimizer": opt, "seeds": len(runs), "evaluations": runs[0].evaluations,
                     f"final {error_name}": _mean_std([r.final["test_error"] for r in runs]), **extra,
                     "reached": f"{len(reached)}/{len(runs)}",
                     "evals to threshold (median)": statistics.median(reached) if reached else "n/a",
                     "train s": _mean_std([r.train_s for r in runs]),
                     "peak MiB": _mean_std([r.peak_mem_mb for r in runs]),
                     "diverged": sum(r.diverged for r in runs)})
    return rows


def _plot_module():
    matplotlib = require("matplotlib", "the plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_run(result: RunResult, error_name: str, path: Path) -> Path:
    """Training loss, test error and learning rate against loss evaluations."""
    plt = _plot_module()
    x = [row["evaluations"] for row in result.curve]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("train_loss", "test_error", "lr"), ("training loss", error_name, "learning rate")):
        ax.plot(x, [row[key] for row in result.curve])
        ax.set_xlabel("loss evaluations")
        ax.set_ylabel(label)
        if key != "test_error" or min(row[key] for row in result.curve) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.task} · {result.optimizer} · seed {result.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_compare(results: Sequence[RunResult], error_name: str, threshold: float, path: Path, title: str,
                 baseline_label: str = "threshold") -> Path:
    """Training loss and test metric (median over seeds, band: min to max), one line per optimizer, against loss
    evaluations and against wall-clock; the threshold drawn and labelled (``baseline_label``), legend outside."""
    plt = _plot_module()
    by_opt: Dict[str, List[RunResult]] = defaultdict(list)
    for r in results:
        by_opt[r.optimizer].append(r)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharey="row")
    for (row, key, label), (col, xkey, xlabel) in [(rk, cx) for rk in ((0, "train_loss", "training loss"),
                                                                       (1, "test_error", error_name))
                                                   for cx in ((0, "evaluations", "loss evaluations"),
                                                              (1, "train_s", "wall-clock of the steps (s)"))]:
        ax = axes[row][col]
        for opt, runs in by_opt.items():
            n = min(len(r.curve) for r in runs)  # a diverged run stops early
            x = [statistics.fmean(r.curve[i][xkey] for r in runs) for i in range(n)]
            ys = [[r.curve[i][key] for r in runs] for i in range(n)]
            line, = ax.plot(x, [statistics.median(y) for y in ys], label=opt)
            ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.15)
        if key == "test_error" and threshold > 0:
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=baseline_label)
        values = [row_[key] for r in results for row_ in r.curve]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[1][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
