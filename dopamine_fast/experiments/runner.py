"""One training run: seed, build the model, step, log a learning curve, measure time and memory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .._extras import require
from .memory import PeakMemory
from .optimizers import build_stepper


@dataclass
class RunResult:
    task: str
    optimizer: str
    seed: int
    steps: int  # steps taken (fewer than asked when the loss stopped being finite)
    evaluations: int  # loss evaluations spent
    curve: List[Dict[str, float]]  # one row per log point, step 0 included
    final: Dict[str, float]  # test metrics at the end
    evals_to_threshold: Optional[int]  # first logged evaluation count at which test_error <= task.threshold
    train_s: float  # wall time of the optimizer steps only (test evaluations excluded)
    peak_mem_mb: float  # peak memory of the steps above the level before training
    diverged: bool = False
    hparams: Dict[str, object] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return self.evals_to_threshold is not None


def _batches(task, batch_size: int, seed: int):
    """Full batch when ``batch_size`` is 0 or covers the training set, else random minibatches."""
    n = task.num_train
    if batch_size <= 0 or batch_size >= n:
        while True:
            yield task.x_train, task.y_train
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, n, (batch_size,), generator=g).to(task.device)
        yield task.x_train[idx], task.y_train[idx]


def train(task, optimizer: str, hparams: dict, *, steps: Optional[int] = None, evaluations: Optional[int] = None,
          seed: int = 0, hidden: Optional[int] = None, batch_size: int = 0, log_points: int = 50,
          progress: bool = False, desc: Optional[str] = None, on_log: Optional[Callable[[dict], None]] = None,
          stop: Optional[Callable[[], bool]] = None) -> RunResult:
    """Train a fresh model of ``task`` with ``optimizer`` for ``steps`` steps or an ``evaluations`` budget.

    The curve is logged ``log_points`` times (and at step 0); the progress bar shows the loss and learning rate.
    ``on_log(row)`` sees each curve row as it is logged (to write it out at once); ``stop()`` is asked after every
    step, and True ends the run there (Ctrl-C in the CLI): the curve then ends with that step.
    """
    if (steps is None) == (evaluations is None):
        raise ValueError("give exactly one of steps and evaluations")
    torch.manual_seed(seed)
    model = task.build_model(hidden)
    stepper = build_stepper(optimizer, model, task, hparams, seed)
    if steps is None:
        steps = evaluations // stepper.evaluations_per_step
        if steps < 1:
            raise ValueError(f"a budget of {evaluations} evaluations is less than one {optimizer} step "
                             f"({stepper.evaluations_per_step} evaluations)")
    log_every = max(1, steps // max(1, log_points))
    batches = _batches(task, batch_size, seed)
    meter = PeakMemory(task.device)

    def log(step, loss, train_s):
        row = {"step": step, "evaluations": step * stepper.evaluations_per_step, "train_loss": loss,
               "lr": stepper.lr(), "train_s": train_s}
        row.update(task.evaluate(model))
        curve.append(row)
        if on_log is not None:
            on_log(row)
        return row

    curve: List[Dict[str, float]] = []
    with torch.no_grad():
        x0, y0 = task.x_train, task.y_train
        log(0, float(task.loss(model, x0, y0)), 0.0)
    tqdm = require("tqdm.auto", "the progress bars").tqdm
    bar = tqdm(total=steps, desc=desc or f"{task.name}/{optimizer}", disable=not progress, leave=False)
    train_s, done, diverged, stopped, loss = 0.0, 0, False, False, math.nan
    while done < steps and not diverged and not stopped:
        chunk = min(log_every, steps - done)
        start = time.perf_counter()
        with meter.active():
            for _ in range(chunk):
                x, y = next(batches)
                loss = stepper.step(x, y)
                done += 1
                if not math.isfinite(loss):
                    diverged = True
                    break
                if stop is not None and stop():
                    stopped = True
                    break
            if task.device.type == "cuda":
                torch.cuda.synchronize(task.device)
        train_s += time.perf_counter() - start
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{stepper.lr():.3g}")
        log(done, loss, train_s)
    bar.close()
    final = {k: v for k, v in curve[-1].items() if k not in ("step", "evaluations", "train_s")}
    with torch.no_grad():
        final["val_error"] = task.validation_error(model)  # what hyper-parameter sweeps choose on
    reached = next((row["evaluations"] for row in curve if row["test_error"] <= task.threshold), None)
    return RunResult(task.name, optimizer, seed, done, done * stepper.evaluations_per_step, curve, final, reached,
                     train_s, meter.peak_mb, diverged, dict(hparams))
