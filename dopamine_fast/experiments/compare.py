"""Several optimizers over several seeds on one task at an equal budget of loss evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .optimizers import hparams_for
from .report import curve_rows, format_table, plot_compare, run_row, summary_rows, write_csv
from .runner import RunResult, train


def compare(task, optimizers: Sequence[str], seeds: Sequence[int], evaluations: int, *, hidden: Optional[int] = None,
            batch_size: int = 0, log_points: int = 50, overrides: Optional[Dict[str, dict]] = None,
            progress: bool = False, on_log: Optional[Callable[[dict], None]] = None,
            stop: Optional[Callable[[], bool]] = None) -> List[RunResult]:
    """Train every optimizer from every seed with the same budget; ``overrides[name]`` changes its defaults.

    ``on_log`` sees each curve row (with its task, optimizer and seed) as it is logged; once ``stop()`` is True the
    current run ends at its next step and no further run starts.
    """
    overrides = overrides or {}
    results = []
    for name in optimizers:
        hp = hparams_for(task.family, name, **overrides.get(name, {}))
        for seed in seeds:
            if stop is not None and stop():
                return results
            run = {"task": task.name, "optimizer": name, "seed": seed}
            results.append(train(task, name, hp, evaluations=evaluations, seed=seed, hidden=hidden,
                                 batch_size=batch_size, log_points=log_points, progress=progress,
                                 desc=f"{task.name}/{name}/seed {seed}", stop=stop,
                                 on_log=None if on_log is None else (lambda row, run=run: on_log({**run, **row}))))
    return results


def baseline_label(task) -> str:
    """What the task's threshold line is: the persistence forecast on the chaotic series, else the target."""
    if task.threshold == getattr(task, "persistence_nrmse", None):
        return f"persistence baseline ({task.threshold:.3g})"
    return f"threshold ({task.threshold:.3g})"


def write_compare(results: Sequence[RunResult], task, out: Path, prefix: str = "compare") -> Dict[str, Path]:
    """``<prefix>_runs.csv``, ``<prefix>_curves.csv``, ``<prefix>_summary.csv``/``.md`` and ``<prefix>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(results, task.error_name)
    table = format_table(summary, list(summary[0]))
    paths = {
        "runs": write_csv([run_row(r) for r in results], out / f"{prefix}_runs.csv"),
        "curves": write_csv([row for r in results for row in curve_rows(r)], out / f"{prefix}_curves.csv"),
        "summary": write_csv(summary, out / f"{prefix}_summary.csv"),
        "plot": plot_compare(results, task.error_name, task.threshold, out / f"{prefix}.png",
                             f"{task.name}: median over seeds, band min-max", baseline_label(task)),
    }
    paths["table"] = out / f"{prefix}_summary.md"
    paths["table"].write_text(table + "\n")
    return paths
