"""Several optimizers over several seeds on one task at an equal budget of loss evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .optimizers import hparams_for
from .report import curve_rows, format_table, plot_compare, run_row, summary_rows, write_csv
from .runner import RunResult, train


def compare(task, optimizers: Sequence[str], seeds: Sequence[int], evaluations: int, *, hidden: Optional[int] = None,
            batch_size: int = 0, log_points: int = 50, overrides: Optional[Dict[str, dict]] = None,
            progress: bool = False) -> List[RunResult]:
    """Train every optimizer from every seed with the same budget; ``overrides[name]`` changes its defaults."""
    overrides = overrides or {}
    results = []
    for name in optimizers:
        hp = hparams_for(task.family, name, **overrides.get(name, {}))
        for seed in seeds:
            results.append(train(task, name, hp, evaluations=evaluations, seed=seed, hidden=hidden,
                                 batch_size=batch_size, log_points=log_points, progress=progress,
                                 desc=f"{task.name}/{name}/seed {seed}"))
    return results


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
                             f"{task.name}: {task.error_name} (mean, min-max over seeds)"),
    }
    paths["table"] = out / f"{prefix}_summary.md"
    paths["table"].write_text(table + "\n")
    return paths
