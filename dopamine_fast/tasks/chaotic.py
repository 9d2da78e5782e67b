"""Chaotic time-series forecasting: Lorenz, Rössler and Mackey-Glass, generated in code.

A trajectory of ``length`` samples (after a burn-in that forgets the initial condition) is z-scored with the
statistics of its first ``train_fraction`` (training and validation parts, so nothing leaks from the test part), cut
into look-back windows with one-step-ahead targets, and split chronologically: every test target comes after
every training target. Integration runs on Python floats: the state is 1-3 numbers, where numpy or torch
per-step overhead would dominate. The trajectories are numpy arrays: these tasks need the ``experiments`` extra
(numpy is imported where it is used, so that ``dopamine_fast.tasks`` imports without it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import torch

from .._extras import require
from .base import Task
from .models import ElmanForecaster

if TYPE_CHECKING:
    import numpy as np

Vector = Tuple[float, ...]


def _numpy():
    return require("numpy", "the chaotic tasks")


def _rk4(f: Callable[[Vector], Vector], x: Vector, h: float) -> Vector:
    k1 = f(x)
    k2 = f(tuple(a + 0.5 * h * b for a, b in zip(x, k1)))
    k3 = f(tuple(a + 0.5 * h * b for a, b in zip(x, k2)))
    k4 = f(tuple(a + h * b for a, b in zip(x, k3)))
    return tuple(a + h / 6.0 * (b1 + 2 * b2 + 2 * b3 + b4) for a, b1, b2, b3, b4 in zip(x, k1, k2, k3, k4))


def _ode_trajectory(f, x0: Vector, h: float, substeps: int, length: int, burn_in: int) -> np.ndarray:
    """``length`` samples ``substeps * h`` apart, RK4 with step ``h``, after ``burn_in`` discarded samples."""
    np = _numpy()
    x = tuple(x0)
    out = np.empty((length, len(x)), dtype=np.float64)
    for i in range(burn_in + length):
        for _ in range(substeps):
            x = _rk4(f, x, h)
        if i >= burn_in:
            out[i - burn_in] = x
    return out


@lru_cache(maxsize=8)
def lorenz_trajectory(length: int = 5000, dt: float = 0.01, burn_in: int = 1000, sigma: float = 10.0,
                      rho: float = 28.0, beta: float = 8.0 / 3.0, x0: Vector = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Lorenz-63 sampled every ``dt`` (RK4 with step ``dt``): ``[length, 3]``."""
    def f(s):
        x, y, z = s
        return (sigma * (y - x), x * (rho - z) - y, x * y - beta * z)
    return _ode_trajectory(f, x0, dt, 1, length, burn_in)


@lru_cache(maxsize=8)
def rossler_trajectory(length: int = 5000, dt: float = 0.1, burn_in: int = 1000, a: float = 0.2, b: float = 0.2,
                       c: float = 5.7, x0: Vector = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Rössler sampled every ``dt``, RK4 with ten steps per sample: ``[length, 3]``.

    ``dt = 0.1`` gives about 60 samples per orbit (Lorenz at 0.01 gives about 70), so a 32-step look-back
    covers a similar part of an orbit for both; ``length = 5000`` then spans some 80 orbits.
    """
    def f(s):
        x, y, z = s
        return (-y - z, x + a * y, b + z * (x - c))
    return _ode_trajectory(f, x0, dt / 10, 10, length, burn_in)


@lru_cache(maxsize=8)
def mackey_glass_trajectory(length: int = 5000, tau: float = 17.0, sample_every: float = 1.0, h: float = 0.1,
                            burn_in: int = 1000, beta: float = 0.2, gamma: float = 0.1, n: float = 10.0,
                            x0: float = 1.2) -> np.ndarray:
    """Mackey-Glass ``dx/dt = beta x(t-tau) / (1 + x(t-tau)^n) - gamma x``: ``[length, 1]``.

    The delay equation is discretised on a grid of step ``h`` (``tau / h`` whole steps of history, constant
    ``x0`` before time 0) and integrated with RK4; the delayed term at the half step is the mean of its two
    grid neighbours. Samples are ``sample_every`` apart.
    """
    np = _numpy()
    delay = int(round(tau / h))
    substeps = int(round(sample_every / h))
    if delay < 1 or substeps < 1 or abs(delay * h - tau) > 1e-9 or abs(substeps * h - sample_every) > 1e-9:
        raise ValueError(f"tau ({tau}) and sample_every ({sample_every}) must be whole multiples of h ({h})")
    history = [x0] * (delay + 1)  # history[-1 - delay] is x(t - tau)
    x = x0

    def f(xt, lagged):
        return beta * lagged / (1.0 + lagged ** n) - gamma * xt

    out = np.empty((length, 1), dtype=np.float64)
    for i in range(burn_in + length):
        for _ in range(substeps):
            lag0, lag1 = history[-1 - delay], history[-delay]
            lag_mid = 0.5 * (lag0 + lag1)
            k1 = f(x, lag0)
            k2 = f(x + 0.5 * h * k1, lag_mid)
            k3 = f(x + 0.5 * h * k2, lag_mid)
            k4 = f(x + h * k3, lag1)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            history.append(x)
            del history[0]
        if i >= burn_in:
            out[i - burn_in, 0] = x
    return out


GENERATORS = {"lorenz": lorenz_trajectory, "rossler": rossler_trajectory, "mackey_glass": mackey_glass_trajectory}


def windows(series: torch.Tensor, lookback: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``series[i : i + lookback]`` and targets ``series[i + lookback]``: ``[n, lookback, d]``, ``[n, d]``."""
    n = series.shape[0] - lookback
    x = series.unfold(0, lookback, 1)[:n].transpose(1, 2).contiguous()
    return x, series[lookback:].clone()


def _nrmse(pred: torch.Tensor, target: torch.Tensor, variance: torch.Tensor) -> float:
    """``sqrt(mean_d(MSE_d / var_d))``: RMSE in units of each variable's spread, averaged over variables."""
    mse = ((pred - target) ** 2).reshape(-1, target.shape[-1]).mean(0)
    return float(torch.sqrt((mse / variance).mean()))


class ForecastTask(Task):
    family = "chaotic"
    error_name = "test NRMSE"

    def __init__(self, name: str, series: np.ndarray, lookback: int, train_fraction: float, val_fraction: float,
                 horizon: int, rollouts: int, hidden: int, threshold: Optional[float]):
        self.name = name
        self.lookback, self.horizon, self.default_hidden = lookback, horizon, hidden
        self.split = int(train_fraction * series.shape[0])
        # The last val_fraction of the series before the test part validates: train | validation | test in time.
        self.val_split = self.split - int(val_fraction * series.shape[0])
        raw = torch.tensor(series, dtype=torch.float64)
        train_part = raw[: self.split]
        self.mean, self.std = train_part.mean(0), train_part.std(0)
        self.series = ((raw - self.mean) / self.std).to(torch.float32)  # z-scored with training statistics
        self.x_train, self.y_train = windows(self.series[: self.val_split], lookback)
        self.x_val, self.y_val = windows(self.series[self.val_split - lookback: self.split], lookback)
        self.x_test, self.y_test = windows(self.series[self.split - lookback:], lookback)
        self.target_variance = self.y_test.var(0)
        # Free-running forecasts start at evenly spaced test points and need `horizon` true values after them.
        last = self.series.shape[0] - horizon
        self.rollout_starts = torch.linspace(self.split, last, rollouts).round().long().unique()
        # Persistence (predict the last input) is the bar a forecaster must clear; it is the default threshold.
        self.persistence_nrmse = _nrmse(self.x_test[:, -1], self.y_test, self.target_variance)
        self.threshold = self.persistence_nrmse if threshold is None else threshold

    def to(self, device) -> "ForecastTask":
        super().to(device)
        self.series = self.series.to(device)
        self.target_variance = self.target_variance.to(device)
        return self

    def build_model(self, hidden: Optional[int] = None) -> ElmanForecaster:
        return ElmanForecaster(self.series.shape[1], hidden or self.default_hidden).to(self.device)

    @torch.no_grad()
    def free_run(self, model) -> Tuple[torch.Tensor, torch.Tensor]:
        """Forecasts fed back as inputs for ``horizon`` steps from each start: predictions and truths,
        ``[starts, horizon, d]``."""
        starts = self.rollout_starts.to(self.series.device)
        offsets = torch.arange(-self.lookback, 0, device=starts.device)
        window = self.series[starts[:, None] + offsets]
        preds = []
        for _ in range(self.horizon):
            nxt = model(window)
            preds.append(nxt)
            window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
        truth = self.series[starts[:, None] + torch.arange(self.horizon, device=starts.device)]
        return torch.stack(preds, 1), truth

    @torch.no_grad()
    def evaluate(self, model) -> Dict[str, float]:
        pred = model(self.x_test)
        free_pred, free_truth = self.free_run(model)
        nrmse = _nrmse(pred, self.y_test, self.target_variance)
        return {"test_error": nrmse, "test_mse": float(torch.mean((pred - self.y_test) ** 2)), "nrmse": nrmse,
                "free_run_nrmse": _nrmse(free_pred, free_truth, self.target_variance)}

    @torch.no_grad()
    def validation_error(self, model) -> float:
        return _nrmse(model(self.x_val), self.y_val, self.y_val.var(0))

    def describe(self) -> str:
        return (super().describe() + f", look-back {self.lookback}, free run {self.horizon} steps from "
                f"{len(self.rollout_starts)} starts, persistence NRMSE {self.persistence_nrmse:.4g}")


def forecast_task(system: str, length: int = 5000, lookback: int = 32, train_fraction: float = 0.8,
                  val_fraction: float = 0.1, horizon: int = 50, rollouts: int = 8, hidden: int = 512,
                  threshold: Optional[float] = None,
                  **system_options) -> ForecastTask:
    """A forecasting task on ``system`` (one of ``GENERATORS``); sizes are checked before anything is integrated."""
    np = _numpy()
    if system not in GENERATORS:
        raise ValueError(f"unknown system {system!r}; valid: {sorted(GENERATORS)}")
    if lookback < 1 or horizon < 1 or rollouts < 1:
        raise ValueError(f"lookback, horizon and rollouts must be >= 1, got {lookback}, {horizon}, {rollouts}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 0 <= val_fraction < train_fraction:
        raise ValueError(f"val_fraction must be in [0, train_fraction), got {val_fraction}")
    split = int(train_fraction * length)
    train_end = split - int(val_fraction * length)
    if train_end - lookback < 2 or split - train_end < 1:
        raise ValueError(f"length {length} leaves {train_end} training and {split - train_end} validation samples: "
                         f"need more than lookback ({lookback}) + 2 and at least 1")
    if length - split < horizon:
        raise ValueError(f"length {length} leaves {length - split} test samples: fewer than horizon ({horizon})")
    series = GENERATORS[system](length=length, **system_options)
    if not np.isfinite(series).all():
        raise ValueError(f"the {system} trajectory diverged with options {system_options}")
    return ForecastTask(system, series, lookback, train_fraction, val_fraction, horizon, rollouts, hidden, threshold)
