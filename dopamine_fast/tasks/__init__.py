"""Built-in tasks from the paper, data generated in code: ``get_task(name, **options)``.

- ``xor``: the four patterns, MLP 2-H-1 (``hidden`` 2 by default, ``activation`` tanh or sigmoid).
- ``noisy_xor``: Gaussian clouds around the corners; a small train and a large test set.
- ``lorenz``, ``rossler``, ``mackey_glass``: one-step-ahead forecasting with an Elman RNN (512 hidden by default).
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, Dict

from .base import Task
from .chaotic import GENERATORS, ForecastTask, forecast_task
from .models import ElmanForecaster, XorMLP
from .xor import XorTask, noisy_xor, xor

TASKS: Dict[str, Callable[..., Task]] = {
    "xor": xor,
    "noisy_xor": noisy_xor,
    "lorenz": partial(forecast_task, "lorenz"),
    "rossler": partial(forecast_task, "rossler"),
    "mackey_glass": partial(forecast_task, "mackey_glass"),
}


def task_options(name: str) -> list:
    """Names of the options ``get_task(name, ...)`` accepts (a chaotic system's own parameters included)."""
    factory = TASKS[name]
    names = [p for p, spec in inspect.signature(factory).parameters.items()
             if spec.kind is not inspect.Parameter.VAR_KEYWORD]
    if name in GENERATORS:
        names += [p for p in inspect.signature(GENERATORS[name]).parameters if p not in names]
    return names


def get_task(name: str, **options) -> Task:
    """Build task ``name``; ``None`` options keep their defaults. Unknown names and options list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    options = {k: v for k, v in options.items() if v is not None}
    accepted = task_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"task {name!r} takes no option {', '.join(unknown)}; valid: {', '.join(accepted)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Task", "XorTask", "ForecastTask", "XorMLP", "ElmanForecaster", "get_task", "task_options",
           "xor", "noisy_xor", "forecast_task"]
