"""Defaults train where users try them first: two moons with cross-entropy and the five built-in tasks, with fixed
seeds and no tuning (bench/bench_defaults.py runs the same cases over 20 seeds)."""

import warnings

import pytest
import torch
from torch import nn

import dopamine_fast as df
from dopamine_fast.experiments import hparams_for, train
from dopamine_fast.tasks import get_task
from dopamine_fast.tasks.moons import two_moons


def no_divergence_warning(caught):
    return not any("best seen" in str(w.message) for w in caught)


@pytest.mark.parametrize("cls", [df.Dopamine, df.WeightPerturbation])
def test_two_moons_cross_entropy_with_defaults(cls):
    torch.manual_seed(0)
    x, y = two_moons(128, seed=0)
    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    opt = cls(model.parameters(), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [opt.step(lambda: nn.functional.cross_entropy(model(x), y)) for _ in range(150)]
    assert no_divergence_warning(caught)
    assert losses[-1] < 0.6 * losses[0]


TINY = {"xor": {}, "noisy_xor": dict(train_size=32, test_size=64, val_size=32),
        **{name: dict(length=300, lookback=8, horizon=5, rollouts=2) for name in ("lorenz", "rossler", "mackey_glass")}}


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("optimizer", ["dopamine", "wp"])
def test_builtin_tasks_train_with_family_defaults(name, optimizer):
    task = get_task(name, **TINY[name])
    steps = 150 if task.family == "xor" else 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(task, optimizer, hparams_for(task.family, optimizer), steps=steps, seed=0,
                       hidden=None if task.family == "xor" else 16, batch_size=0 if task.family == "xor" else 64,
                       log_points=2)
    assert not result.diverged and no_divergence_warning(caught)
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
