"""Built-in tasks: shapes, z-scoring with training statistics only, the chronological split, determinism,
and sanity of the generated trajectories."""

import numpy as np
import pytest
import torch

from dopamine_fast.tasks import ElmanForecaster, XorMLP, get_task, task_options
from dopamine_fast.tasks.chaotic import lorenz_trajectory, mackey_glass_trajectory, rossler_trajectory, windows

SMALL = dict(length=400, lookback=8, horizon=10, rollouts=4, hidden=6)
CHAOTIC = ["lorenz", "rossler", "mackey_glass"]


@pytest.mark.parametrize("name", CHAOTIC)
def test_forecast_shapes(name):
    task = get_task(name, **SMALL)
    d = 1 if name == "mackey_glass" else 3
    split, val_split = int(0.8 * 400), int(0.8 * 400) - int(0.1 * 400)
    assert task.x_train.shape == (val_split - 8, 8, d) and task.y_train.shape == (val_split - 8, d)
    assert task.x_val.shape == (split - val_split, 8, d) and task.y_val.shape == (split - val_split, d)
    assert task.x_test.shape == (400 - split, 8, d) and task.y_test.shape == (400 - split, d)
    model = task.build_model()
    assert isinstance(model, ElmanForecaster) and model.rnn.hidden_size == 6
    assert model(task.x_train[:5]).shape == (5, d)
    pred, truth = task.free_run(model)
    assert pred.shape == truth.shape == (len(task.rollout_starts), 10, d)
    metrics = task.evaluate(model)
    assert {"test_error", "test_mse", "nrmse", "free_run_nrmse"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    assert np.isfinite(task.validation_error(model))


@pytest.mark.parametrize("name", CHAOTIC)
def test_zscore_uses_training_statistics_only(name):
    task = get_task(name, **SMALL)
    train_part = task.series[: task.split].double()
    torch.testing.assert_close(train_part.mean(0), torch.zeros_like(train_part.mean(0)), atol=1e-5, rtol=0)
    torch.testing.assert_close(train_part.std(0), torch.ones_like(train_part.std(0)), atol=1e-5, rtol=0)
    # The whole series is not standardised: the test part did not contribute to the statistics.
    assert task.series.double().mean(0).abs().max() > 1e-4


@pytest.mark.parametrize("name", CHAOTIC)
def test_split_is_chronological(name):
    task = get_task(name, **SMALL)
    s, split, lb = task.series, task.split, task.lookback
    val = task.val_split
    torch.testing.assert_close(task.y_train, s[lb:val])  # training targets: everything before validation
    torch.testing.assert_close(task.y_val, s[val:split])  # validation targets: up to the test split
    torch.testing.assert_close(task.x_val[0], s[val - lb:val])
    torch.testing.assert_close(task.y_test, s[split:])  # test targets: everything after it
    torch.testing.assert_close(task.x_test[0], s[split - lb:split])
    assert int(task.rollout_starts.min()) >= split and int(task.rollout_starts.max()) + task.horizon <= len(s)


def test_windows_pairs_inputs_with_next_value():
    series = torch.arange(12.0).reshape(6, 2)
    x, y = windows(series, 3)
    assert x.shape == (3, 3, 2) and y.shape == (3, 2)
    torch.testing.assert_close(x[1], series[1:4])
    torch.testing.assert_close(y[1], series[4])


@pytest.mark.parametrize("name", CHAOTIC + ["noisy_xor"])
def test_tasks_are_deterministic(name):
    options = SMALL if name in CHAOTIC else dict(train_size=16, test_size=32)
    a, b = get_task(name, **options), get_task(name, **options)
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        torch.testing.assert_close(getattr(a, attr), getattr(b, attr))


def test_trajectories_do_not_depend_on_the_cache():
    cached = lorenz_trajectory(length=50)
    np.testing.assert_array_equal(cached, lorenz_trajectory.__wrapped__(length=50))


def test_lorenz_trajectory_is_on_the_attractor():
    traj = lorenz_trajectory(length=3000)
    x, y, z = traj.T
    assert np.abs(x).max() < 25 and np.abs(y).max() < 35 and 0 < z.min() and z.max() < 55
    assert (x > 5).any() and (x < -5).any()  # both wings visited
    assert 20 < z.mean() < 27  # the attractor's mean height is about 23.5
    # RK4 at dt = 0.01 agrees with a finer integration over one step.
    from dopamine_fast.tasks.chaotic import _ode_trajectory
    f = lambda s: (10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2])  # noqa: E731
    coarse = _ode_trajectory(f, tuple(traj[0]), 0.01, 1, 1, 0)[0]
    fine = _ode_trajectory(f, tuple(traj[0]), 0.001, 10, 1, 0)[0]
    np.testing.assert_allclose(coarse, fine, atol=1e-6)
    np.testing.assert_allclose(coarse, traj[1], atol=1e-9)


def test_rossler_and_mackey_glass_are_bounded_and_varied():
    r = rossler_trajectory(length=2000)
    assert np.isfinite(r).all() and np.abs(r[:, :2]).max() < 15 and r[:, 2].min() > -1 and r[:, 0].std() > 2
    m = mackey_glass_trajectory(length=2000)
    assert 0.2 < m.min() and m.max() < 1.5 and m.std() > 0.1


def test_xor_patterns_and_model():
    task = get_task("xor", hidden=4, activation="sigmoid")
    assert task.x_train.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert task.y_train.flatten().tolist() == [0, 1, 1, 0]
    model = task.build_model()
    assert isinstance(model, XorMLP) and model[0].out_features == 4
    out = model(task.x_test)
    assert out.shape == (4, 1) and ((out > 0) & (out < 1)).all()
    metrics = task.evaluate(model)
    assert metrics["test_error"] == pytest.approx(1 - metrics["accuracy"])


def test_noisy_xor_clouds():
    task = get_task("noisy_xor", train_size=16, test_size=500, noise=0.1)
    assert task.x_train.shape == (16, 2) and task.x_test.shape == (500, 2) and task.y_test.shape == (500, 1)
    corner = task.x_test.round().clamp(0, 1)
    torch.testing.assert_close((corner[:, :1] != corner[:, 1:]).float(), task.y_test)  # labels are XOR


def test_bad_names_and_sizes_are_refused():
    with pytest.raises(ValueError, match="valid tasks: xor, noisy_xor, lorenz"):
        get_task("lorenzz")
    with pytest.raises(ValueError, match="valid: hidden, activation"):
        get_task("xor", lookback=3)
    assert "tau" in task_options("mackey_glass")
    with pytest.raises(ValueError, match="fewer than horizon"):
        get_task("lorenz", length=100, horizon=50)
    with pytest.raises(ValueError, match="lookback"):
        get_task("lorenz", length=100, lookback=90)
    with pytest.raises(ValueError, match="activation"):
        get_task("xor", activation="relu")
    with pytest.raises(ValueError, match="train_size"):
        get_task("noisy_xor", train_size=2)
