"""Dopamine: the written rule step by step, scale invariance, no positive feedback, schedulers, the ablation,
the Dopamine-2 preset, the divergence guard, the estimate as a gradient, and XOR with the defaults."""

import copy
import math
import warnings

import pytest
import torch

import dopamine_fast as df
from dopamine_fast.ops import noise_reference
from dopamine_fast.optim import dopamine, dopamine_rules

XOR_X = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[-1.0], [1.0], [1.0], [-1.0]])


def xor_model(seed, hidden=2, dtype=torch.float32):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("relative", [True, False])
def test_first_step_is_the_written_rule(relative):
    w0 = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.2], dtype=torch.float64)
    f = lambda v: float(((v - target) ** 2).sum())  # noqa: E731
    w = torch.nn.Parameter(w0.clone())
    opt = df.Dopamine([w], lr=0.1, sigma=0.01, num_perturbations=3, antithetic=False, seed=4, relative=relative)
    opt.step(lambda: ((w - target) ** 2).sum())
    eps = noise_reference(4, 0, 0, 0, 3, 5).double()
    delta = torch.tensor([f(w0 + 0.01 * eps[j]) - f(w0) for j in range(3)], dtype=torch.float64)
    z = delta / delta.pow(2).mean().sqrt()  # bias-corrected: s_0 is the RMS of the first RPEs
    u = math.sqrt(3) * (z[:, None] * eps).mean(0)
    scale = float(w0.pow(2).mean().sqrt()) if relative else 1.0  # a relative step is sized by the tensor's RMS
    torch.testing.assert_close(w.detach(), w0 - 0.1 * scale * u)  # a_0 = 1: the first step uses lr as given
    assert opt.current_lr == pytest.approx(0.1)


@pytest.mark.parametrize("numel", [dopamine.WIDTH_REFERENCE, 16 * dopamine.WIDTH_REFERENCE])
def test_a_model_above_the_reference_size_steps_less_per_coordinate(numel):
    """The first step per coordinate is lr x RMS x (WIDTH_REFERENCE / P) ** 0.25 above the reference size: the
    same RPEs move 16x as many parameters half as far each."""
    w = torch.nn.Parameter(torch.full((numel,), 0.5, dtype=torch.float64))
    opt = df.Dopamine([w], lr=0.1, num_perturbations=2, antithetic=False, adaptive=False)
    moved = step_size(opt, w, [1.0, 1.5, 0.5]) / math.sqrt(numel)
    expected = 0.1 * 0.5 * dopamine.width_factor(numel)  # z = (0.5, -0.5) / 0.5: u has per-coordinate RMS 1
    assert dopamine.width_factor(numel) == (1.0 if numel == dopamine.WIDTH_REFERENCE else 0.5)
    assert moved == pytest.approx(expected, rel=0.05)


def test_relative_step_moves_zero_initialised_tensors():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False)
    opt.step_from_losses(torch.tensor([1.0, 1.5, 0.5]))
    assert 0 < float(w.detach().abs().max()) < 1e-2


def rpe_pair(rpe):
    return torch.tensor([rpe, -rpe], dtype=torch.float64)


def test_rpes_are_scaled_by_a_reference_level_frozen_after_the_warm_up():
    state = dopamine_rules.initial_state()
    levels = [0.5, 0.05, 0.005, 50.0, 5.0]
    z = [float(dopamine_rules.scaled_rpes(state, rpe_pair(c), 0.0)[0]) for c in levels]
    # The reference is the RMS of every RPE so far (beta 0: s_t is this step's RMS). At it z has RMS 1; below it z
    # shrinks with the RPEs (the step becomes proportional to the WP estimate); above it z is normalised (bounded).
    references = [math.sqrt(sum(c * c for c in levels[:i + 1]) / (i + 1)) for i in range(len(levels))]
    assert z == pytest.approx([c / max(r, c) for c, r in zip(levels, references)])
    assert z[0] == 1.0 and z[3] == pytest.approx(1.0) and z[2] < z[1] < 1.0
    assert state["rpe_ref"] == pytest.approx(references[-1])
    rest = dopamine_rules.REFERENCE_STEPS - len(levels)
    for _ in range(rest + 3):
        dopamine_rules.scaled_rpes(state, rpe_pair(5.0), 0.0)
    frozen = math.sqrt((sum(c * c for c in levels) + rest * 25.0) / dopamine_rules.REFERENCE_STEPS)
    spike = dopamine_rules.scaled_rpes(state, rpe_pair(500.0), 0.0)
    # After the warm-up the reference is frozen: a spike is bounded (normalised) but does not slow later steps.
    assert float(spike[0]) == pytest.approx(1.0) and state["rpe_ref"] == pytest.approx(frozen)


def test_the_gain_raises_the_rate_below_the_reference_but_never_the_bounded_step():
    state = dopamine_rules.initial_state()
    for _ in range(dopamine_rules.REFERENCE_STEPS):
        dopamine_rules.scaled_rpes(state, rpe_pair(1.0), 0.0)

    def z(rpe, gain):
        return float(dopamine_rules.scaled_rpes(copy.deepcopy(state), rpe_pair(rpe), 0.0, gain)[0])
    # Below the reference level (1) the gain multiplies the rate, up or down.
    assert [z(0.1, g) for g in (0.5, 1.0, 2.0)] == pytest.approx([0.05, 0.1, 0.2])
    # Above it the step is normalised: a gain above 1 cannot enlarge it, a gain below 1 still shrinks it.
    assert [z(10.0, g) for g in (0.5, 1.0, 2.0, 4.0)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    # A gain above 1 starts the normalisation earlier: at a quarter of the reference with a gain of 4.
    assert z(0.5, 4.0) == pytest.approx(1.0) and z(0.2, 4.0) == pytest.approx(0.8)


def step_size(opt, w, losses):
    before = w.detach().clone()
    opt.step_from_losses(torch.tensor(losses, dtype=torch.float64))
    return float((w.detach() - before).norm())


def test_the_step_anneals_as_the_rpes_shrink():
    w = torch.nn.Parameter(torch.ones(400, dtype=torch.float64))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, adaptive=False, beta_rpe=0.0)
    for _ in range(dopamine_rules.REFERENCE_STEPS):  # the warm-up sets the reference level
        first = step_size(opt, w, [1.0, 1.5, 0.5])
    late = step_size(opt, w, [1.0, 1.05, 0.95])  # RPEs 10x below the reference: a 10x smaller step
    assert late / first == pytest.approx(0.1, rel=0.2)


def test_the_step_scale_is_measured_once_not_from_growing_weights():
    w = torch.nn.Parameter(torch.full((400,), 0.5, dtype=torch.float64))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, adaptive=False, beta_rpe=0.0)
    a = step_size(opt, w, [1.0, 1.5, 0.5])
    assert opt.state[w]["step_scale"] == pytest.approx(0.5, rel=0.05)  # the RMS before the first step
    w.data.mul_(100.0)  # the weights grew: the step does not
    b = step_size(opt, w, [1.0, 1.5, 0.5])
    assert opt.state[w]["step_scale"] == pytest.approx(0.5, rel=0.05) and b == pytest.approx(a, rel=0.2)


def test_scaling_the_loss_leaves_the_trajectory_unchanged():
    def run(scale):
        model = xor_model(3, hidden=4, dtype=torch.float64)
        opt = df.Dopamine(model.parameters(), seed=3)
        gains = []
        for _ in range(60):
            opt.step(lambda: scale * ((model(XOR_X.double()) - XOR_Y.double()) ** 2).mean())
            gains.append(opt.gain)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), gains

    (w1, g1), (w2, g2) = run(1.0), run(1000.0)
    torch.testing.assert_close(w1, w2, rtol=1e-9, atol=1e-9)
    assert g1 == pytest.approx(g2, rel=1e-9)
    assert len(set(g1)) > 5  # the gain moved: the invariance is not that of a frozen factor


def test_a_rising_loss_only_lowers_the_gain():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, on_divergence="warn")
    gains = []
    for t in range(40):
        base = 1.0 * 1.5 ** t  # the loss keeps rising, and its RPEs with it
        opt.step_from_losses(torch.tensor([base, base * 1.1, base * 0.95]))
        gains.append(opt.gain)
    assert all(b <= a for a, b in zip(gains, gains[1:]))
    assert gains[-1] == pytest.approx(0.25)  # clamped at gain_min, never below


def gains_for(losses, **kwargs):
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, **kwargs)
    out = []
    for base in losses:
        opt.step_from_losses(torch.tensor([base, base * 1.01, base * 0.99]))
        out.append(opt.gain)
    return out


def test_gain_rises_on_better_than_expected_and_settles_back():
    accelerating = [10.0 * 0.9 ** (t * t / 20) for t in range(40)]  # each step better than the last predicted
    assert max(gains_for(accelerating, gain_max=2.0)) == pytest.approx(2.0)  # bounded
    settled = gains_for(accelerating + [accelerating[-1]] * 150, gain_max=2.0)
    assert abs(math.log(settled[-1])) < math.log(1.6)  # no surprise any more: back towards 1


def test_gain_does_not_drift_on_noise():
    g = torch.Generator().manual_seed(0)
    noisy = (1.0 + 0.1 * torch.randn(300, generator=g, dtype=torch.float64)).tolist()  # minibatch losses, no trend
    logs = sorted(abs(math.log(v)) for v in gains_for(noisy))
    assert logs[len(logs) // 2] < 0.4 and logs[-1] < math.log(4.0)


def test_adaptive_false_freezes_the_gain():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, adaptive=False)
    for t in range(20):
        opt.step_from_losses(torch.tensor([0.9 ** t, 1.0, 0.5]))
    assert opt.gain == 1.0 and opt.current_lr == opt.param_groups[0]["lr"]


def test_schedulers_compose_with_the_gain():
    model = xor_model(0, hidden=4)
    opt = df.Dopamine(model.parameters(), lr=0.08)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    for step in range(12):
        opt.step(lambda: ((model(XOR_X) - XOR_Y) ** 2).mean())
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.08 * 0.25)  # the optimizer never writes group["lr"]
    assert opt.current_lr == pytest.approx(0.08 * 0.25 * opt.gain)


def test_state_dict_round_trip_continues_the_signals():
    def fresh():
        model = xor_model(1, hidden=4)
        return model, df.Dopamine(model.parameters(), seed=1)

    model, opt = fresh()
    closure = lambda: ((model(XOR_X) - XOR_Y) ** 2).mean()  # noqa: E731
    for _ in range(7):
        opt.step(closure)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(5):
        opt.step(closure)
    expected = [p.detach().clone() for p in model.parameters()]

    model2, opt2 = fresh()
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    for _ in range(5):
        opt2.step(lambda: ((model2(XOR_X) - XOR_Y) ** 2).mean())
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b.detach())
    assert opt2.gain == opt.gain


@pytest.mark.parametrize("entry,value,match", [
    ("log_gain", float("nan"), "log_gain"), ("rpe_sq", -1.0, "rpe_sq"), ("log_gain", 5.0, "log_gain"),
    ("rpe_count", 1.5, "rpe_count"), ("rpe_ref", -1.0, "rpe_ref"), ("rpe_ref", float("inf"), "rpe_ref"),
    ("since_best", -1, "since_best"), ("best_slow_loss", float("nan"), "best_slow_loss"),
    ("noise_scale", 0.0, "noise_scale"),
])
def test_load_refuses_a_corrupt_signal_state(entry, value, match):
    model = xor_model(0)
    opt = df.Dopamine(model.parameters())
    opt.step(lambda: ((model(XOR_X) - XOR_Y) ** 2).mean())
    state = copy.deepcopy(opt.state_dict())
    state["state"]["global"]["dopamine"][entry] = value
    fresh = df.Dopamine(model.parameters())
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(state)
    assert fresh.state["global"]["step"] == 0  # left as it was
    bad_options = copy.deepcopy(opt.state_dict())
    bad_options["state"]["global"]["dopamine"]["options"]["beta_rpe"] = 1.5
    with pytest.raises(ValueError, match="beta_rpe"):
        fresh.load_state_dict(bad_options)


def test_load_refuses_a_bad_step_scale_and_a_state_of_the_earlier_rule():
    model = xor_model(0)
    opt = df.Dopamine(model.parameters())
    opt.step(lambda: ((model(XOR_X) - XOR_Y) ** 2).mean())
    fresh = df.Dopamine(model.parameters())
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["step_scale"] = 0.0
    with pytest.raises(ValueError, match="step_scale of parameter 0"):
        fresh.load_state_dict(bad)
    old = copy.deepcopy(opt.state_dict())
    del old["state"]["global"]["dopamine"]["rpe_ref"]  # saved before the reference level existed
    with pytest.raises(ValueError, match="earlier version of Dopamine"):
        fresh.load_state_dict(old)
    assert fresh.state["global"]["step"] == 0 and not fresh.state[next(model.parameters())]


def annealed_scales(losses, patience, rpe=1.0):
    """The noise scale after each of ``losses``, the member RPEs held at ``+-rpe``."""
    state, scales = dopamine_rules.initial_state(), []
    for loss in losses:
        dopamine_rules.scaled_rpes(state, rpe_pair(rpe), 0.9)
        scales.append(dopamine_rules.anneal_noise(state, loss, patience, 0.9))
    return scales


def test_sigma_halves_each_time_the_loss_stalls_for_the_patience():
    # A loss that jitters about a level, as a run does about its noise floor: the slow average stops setting new
    # lows, and sigma halves once per `patience` steps without one.
    jitter = [1.0 + 0.5 * (-1) ** t for t in range(400)]
    scales = annealed_scales(jitter, patience=20)
    halvings = [t for t in range(1, 400) if scales[t] < scales[t - 1]]
    assert len(halvings) >= 3 and all(b - a >= 20 for a, b in zip(halvings, halvings[1:]))
    assert all(scales[t] == 0.5 * scales[t - 1] for t in halvings)
    # Steady progress, however slow, keeps setting new lows: no annealing.
    assert annealed_scales([1.0 / (1 + 1e-4 * t) for t in range(400)], patience=20) == [1.0] * 400
    assert annealed_scales(jitter, patience=0) == [1.0] * 400  # patience 0: never
    # RPEs at the loss's rounding: a smaller perturbation would measure nothing, so sigma stays.
    assert annealed_scales(jitter, patience=20, rpe=1e-6) == [1.0] * 400
    # The floor: at most ten halvings.
    assert min(annealed_scales(jitter * 10, patience=5)) == dopamine_rules.MIN_NOISE_SCALE


def test_the_annealed_sigma_perturbs_the_next_steps():
    w = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.2]))
    opt = df.Dopamine([w], sigma=0.04, num_perturbations=4, anneal_patience=10, seed=3)
    target = torch.tensor([0.1, 0.2, 0.3])
    for t in range(300):  # a noisy loss that cannot fall below its noise: the run stalls and sigma anneals
        torch.manual_seed(t)
        opt.step(lambda: ((w - target) ** 2).sum() + 0.05 * torch.rand(()))
    assert opt.current_sigma < 0.04 and opt.param_groups[0]["sigma"] == 0.04  # the user's sigma is untouched
    assert all(pn.sigma == opt.current_sigma for pn in opt.plan().params)
    resumed = df.Dopamine([w], sigma=0.04, num_perturbations=4, anneal_patience=10, seed=3)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert resumed.current_sigma == opt.current_sigma


def test_a_state_saved_before_the_annealing_loads_unannealed():
    model = xor_model(0)
    opt = df.Dopamine(model.parameters())
    opt.step(lambda: ((model(XOR_X) - XOR_Y) ** 2).mean())
    old = copy.deepcopy(opt.state_dict())
    signals = old["state"]["global"]["dopamine"]
    for key in dopamine_rules.initial_anneal_state():
        del signals[key]
    del signals["options"]["anneal_patience"]
    fresh = df.Dopamine(model.parameters())
    fresh.load_state_dict(old)
    loaded = fresh.state["global"]["dopamine"]
    assert {k: loaded[k] for k in dopamine_rules.initial_anneal_state()} == dopamine_rules.initial_anneal_state()
    assert loaded["options"]["anneal_patience"] == 200 and loaded["rpe_count"] == 1
    bad = copy.deepcopy(opt.state_dict())
    bad["state"]["global"]["dopamine"]["noise_scale"] = 2.0
    with pytest.raises(ValueError, match="noise_scale"):
        fresh.load_state_dict(bad)


def test_dopamine2_preset_is_the_third_party_rule():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = df.Dopamine.preset("dopamine2", [w])
    assert isinstance(opt, df.Dopamine2)
    group = opt.param_groups[0]
    assert (group["sigma"], group["lr"], opt.num_members) == (1e-4, 1e-2, 2)
    before = w.detach().clone()
    opt.step_from_losses(torch.tensor([1.0, 1.5]))
    level = 0.9998 * 1e-4 + 0.0002 * 0.5
    lr = 0.0002 * 1e-2 + 0.9998 * level
    assert opt.current_lr == pytest.approx(lr)
    # The unnormalised update: w <- w - eta * delta * sigma * eps.
    eps = noise_reference(0, 0, 0, 0, 1, 4)[0]
    torch.testing.assert_close(w.detach(), before - lr * 0.5 * 1e-4 * eps)
    assert df.Dopamine.preset("dopamine2", [w], sigma=1e-5).param_groups[0]["sigma"] == 1e-5
    with pytest.raises(ValueError, match="preset"):
        df.Dopamine.preset("nope", [w])
    with pytest.raises(ValueError, match="beta_s"):
        df.Dopamine2([w], beta_s=1.0)


def diverging(opt, w, steps=12):
    """Feed losses that first improve to 1, then jump to 100 and stay there."""
    for t in range(steps):
        base = 2.0 - 0.5 * t if t < 3 else 100.0
        opt.step_from_losses(torch.tensor([base, base + 0.1, base - 0.1]))


@pytest.mark.parametrize("cls", [df.Dopamine, df.WeightPerturbation])
def test_divergence_guard_warns_once_naming_lr(cls):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = cls([w], num_perturbations=2, antithetic=False, on_divergence="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diverging(opt, w, steps=20)
    messages = [str(c.message) for c in caught if "best seen" in str(c.message)]
    assert len(messages) == 1 and "lower lr" in messages[0]


@pytest.mark.parametrize("cls", [df.Dopamine, df.WeightPerturbation, df.Dopamine2])
def test_divergence_guard_restores_by_default(cls):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = cls([w], num_perturbations=2, antithetic=False)
    lr = opt.param_groups[0]["lr"]
    with pytest.warns(RuntimeWarning, match="restored the best weights and halved lr"):
        diverging(opt, w, steps=20)
    assert opt.state["global"]["on_divergence"] == "restore" and opt.param_groups[0]["lr"] < lr


def test_perturbation_gradient_guard_only_warns():
    """It applies no step, so it cannot restore or halve a rate: the optimizer after it owns those."""
    w = torch.nn.Parameter(torch.zeros(3))
    est = df.PerturbationGradient([w], num_perturbations=2, antithetic=False)
    assert est.state["global"]["on_divergence"] == "warn"


def test_divergence_guard_raises_without_updating():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, on_divergence="raise")
    with pytest.raises(df.DivergenceError, match="lr"):
        for t in range(20):
            before = w.detach().clone()
            base = 2.0 - 0.5 * t if t < 3 else 100.0
            opt.step_from_losses(torch.tensor([base, base + 0.1, base - 0.1]))
    assert torch.equal(w.detach(), before)


def test_divergence_guard_restores_the_best_weights_and_halves_lr():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = df.Dopamine([w], lr=0.1, num_perturbations=2, antithetic=False, on_divergence="restore")
    best = None
    with pytest.warns(RuntimeWarning, match="restored"):
        for t in range(12):
            base = 2.0 - 0.5 * t if t < 3 else 100.0
            if t == 2:
                best = w.detach().clone()  # the weights that gave the best loss (1.0)
            opt.step_from_losses(torch.tensor([base, base + 0.1, base - 0.1]))
            if opt.param_groups[0]["lr"] < 0.1:
                break
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert torch.equal(w.detach(), best)


def test_perturbation_gradient_is_the_wp_estimate_and_leaves_weights():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    target = torch.randn(5, dtype=torch.float64)
    w0 = w.detach().clone()
    est = df.PerturbationGradient([w], sigma=0.01, num_perturbations=4, antithetic=False, seed=5)
    est.step(lambda: ((w - target) ** 2).sum())
    eps = noise_reference(5, 0, 0, 0, 4, 5).double()
    f = lambda v: float(((v - target) ** 2).sum())  # noqa: E731
    grad = sum((f(w0 + 0.01 * eps[j]) - f(w0)) * eps[j] / 0.01 for j in range(4)) / 4
    assert torch.equal(w.detach(), w0)
    torch.testing.assert_close(w.grad, grad, rtol=1e-5, atol=1e-6)  # a difference quotient at sigma 0.01
    with pytest.warns(RuntimeWarning, match="non-finite"):
        est.step(lambda: torch.tensor(float("nan")))
    assert w.grad is None  # a skipped step leaves no stale estimate for the optimizer after it


def test_adam_on_the_estimate_trains_xor():
    solved = 0
    for seed in range(5):
        model = xor_model(seed, hidden=8)
        est = df.PerturbationGradient(model.parameters(), num_perturbations=16, seed=seed)
        adam = torch.optim.Adam(model.parameters(), lr=0.05)
        closure = lambda: ((model(XOR_X) - XOR_Y) ** 2).mean()  # noqa: E731
        first = float(closure().detach())
        for _ in range(200):
            est.step(closure)
            adam.step()
        solved += bool((torch.sign(model(XOR_X)) == XOR_Y).all()) and float(closure().detach()) < 0.1 * first
    assert solved >= 4


# Of 10 seeds, at least this many solve 2-2-1 XOR in 300 steps with the defaults. Some initialisations sit in the
# basin of a local minimum whatever the optimizer; Dopamine's relative step (sized by the weights' RMS) is slower
# to leave a small initialisation than WP's (bench/results/defaults_cpu has the 20-seed numbers).
XOR_SOLVED = {df.Dopamine: 4, df.WeightPerturbation: 6}


@pytest.mark.parametrize("cls", [df.Dopamine, df.WeightPerturbation])
def test_xor_2_2_1_tanh_with_defaults(cls):
    solved = trained = 0
    for seed in range(10):
        model = xor_model(seed)
        opt = cls(model.parameters(), seed=seed)
        closure = lambda: ((model(XOR_X) - XOR_Y) ** 2).mean()  # noqa: E731
        first = float(closure().detach())
        for step in range(300):
            opt.step(closure)
        solved += bool((torch.sign(model(XOR_X)) == XOR_Y).all())
        trained += float(closure()) < 0.5 * first
    assert trained >= 9 and solved >= XOR_SOLVED[cls]


def test_divergence_guard_ignores_jitter_near_zero():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = df.Dopamine([w], num_perturbations=2, antithetic=False, on_divergence="raise")
    for t in range(30):
        base = 1.0 if t == 0 else (1e-6 if t == 5 else 1e-4)  # 100x the best, far below where it started
        before = w.detach().clone()
        opt.step_from_losses(torch.tensor([base, base * 1.1, base * 0.9]))
        assert not torch.equal(w.detach(), before)  # every update applied: the guard never held one back
    assert opt.state["global"]["divergence"]["strikes"] == 0  # the jitter never counted as divergence
