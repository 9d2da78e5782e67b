"""Dopamine: the learning-rate rules step by step, the Dopamine-2 preset, and XOR."""

import pytest
import torch

import dopamine_fast as df
from dopamine_fast.optim.functional import reward_prediction_errors

XOR_X = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[-1.0], [1.0], [1.0], [-1.0]])


def test_learning_rate_follows_the_dopamine_level():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = df.Dopamine([w], lr=0.3, num_perturbations=2, antithetic=False, beta_s=0.5, beta_lr=0.8, kappa=2.0,
                      lr_min=0.0, lr_max=10.0)
    level, lr = None, 0.3
    for losses in ([1.0, 1.5, 0.7], [1.0, 1.2, 0.6], [0.9, 0.9, 0.9]):
        delta = reward_prediction_errors(torch.tensor(losses, dtype=torch.float64), False)
        mag = float(delta.abs().mean())
        level = mag if level is None else 0.5 * level + 0.5 * mag
        lr = 0.8 * lr + 0.2 * 2.0 * level
        opt.step_from_losses(torch.tensor(losses))
        assert opt.param_groups[0]["rpe_level"] == pytest.approx(level)
        assert opt.current_lr == pytest.approx(lr)


def test_learning_rate_is_clamped():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = df.Dopamine([w], lr=0.3, num_perturbations=2, antithetic=False, kappa=1000.0, lr_max=0.4)
    opt.step_from_losses(torch.tensor([1.0, 2.0, 3.0]))
    assert opt.current_lr == 0.4
    opt = df.Dopamine([w], lr=0.3, num_perturbations=2, antithetic=False, kappa=0.0, beta_lr=0.0, lr_min=0.05)
    opt.step_from_losses(torch.tensor([1.0, 2.0, 3.0]))
    assert opt.current_lr == 0.05


def test_dopamine2_preset_is_the_third_party_rule():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine.preset("dopamine2", [w])
    group = opt.param_groups[0]
    assert (group["sigma"], group["lr"], group["beta_s"], group["beta_lr"], opt.num_members) == (
        1e-4, 1e-2, 0.9998, 0.9998, 2)
    before = w.detach().clone()
    opt.step_from_losses(torch.tensor([1.0, 1.5]))
    level = 0.9998 * 1e-4 + 0.0002 * 0.5
    lr = 0.0002 * 1e-2 + 0.9998 * level
    assert group["rpe_level"] == pytest.approx(level)
    assert opt.current_lr == pytest.approx(lr)
    # The unnormalised update: w <- w - eta * delta * sigma * eps.
    eps = df.ops.noise_reference(0, 0, 0, 0, 1, 4)[0]
    torch.testing.assert_close(w.detach(), before - lr * 0.5 * 1e-4 * eps)
    assert df.Dopamine.preset("dopamine2", [w], sigma=1e-5).param_groups[0]["sigma"] == 1e-5
    with pytest.raises(ValueError, match="preset"):
        df.Dopamine.preset("nope", [w])


@pytest.mark.parametrize("cls", [df.Dopamine, df.WeightPerturbation])
def test_xor_2_2_1_tanh(cls):
    # Bipolar XOR, a 2-2-1 tanh MLP with PyTorch's default init: some initialisations sit in the basin of a
    # local minimum whatever the optimizer (Adam at lr 0.05 solves 6 of these 10 seeds in 1000 steps).
    budget, solved = 500, 0
    for seed in range(10):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1), torch.nn.Tanh())
        opt = cls(model.parameters(), seed=seed)
        closure = lambda: ((model(XOR_X) - XOR_Y) ** 2).mean()  # noqa: E731
        for step in range(budget):
            opt.step(closure)
            if step % 10 == 9 and bool((torch.sign(model(XOR_X)) == XOR_Y).all()):
                solved += 1
                break
    assert solved >= 6
