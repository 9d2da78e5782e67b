"""The shared optimizer machinery: bad input, non-finite losses, state_dict, determinism, the drop-in step."""

import copy

import pytest
import torch

import dopamine_fast as df
from dopamine_fast.ops import noise_reference

OPTIMIZERS = [df.WeightPerturbation, df.Dopamine]


def quadratic(dim=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(dim, generator=g))
    target = torch.randn(dim, generator=g)
    return w, (lambda: ((w - target) ** 2).sum())


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(num_perturbations=0), "num_perturbations"),
    (dict(lr=-0.1), "lr"), (dict(rank=-1), "rank"), (dict(seed=-3), "seed"),
    (dict(num_perturbations=3, antithetic=True), "even"), (dict(sigma=float("nan")), "sigma"),
])
def test_bad_hyperparameters_name_the_argument(cls, kwargs, match):
    w, _ = quadratic()
    with pytest.raises(ValueError, match=match) as err:
        cls([w], **kwargs)
    value = next(iter(kwargs.values()))
    assert repr(value) in str(err.value) or str(value) in str(err.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(beta_rpe=1.0), "beta_rpe"), (dict(beta_loss=-0.1), "beta_loss"), (dict(gain_min=0.0), "gain_min"),
    (dict(gain_max=0.5), "gain_max"), (dict(gain_rate=-1.0), "gain_rate"), (dict(adaptive=1), "adaptive"),
    (dict(anneal_patience=-1), "anneal_patience"), (dict(anneal_patience=2.5), "anneal_patience"),
    (dict(anneal_patience=True), "anneal_patience"),
    (dict(on_divergence="ignore"), "on_divergence"),
])
def test_bad_dopamine_hyperparameters(kwargs, match):
    w, _ = quadratic()
    with pytest.raises(ValueError, match=match):
        df.Dopamine([w], **kwargs)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_bad_parameters(cls):
    with pytest.raises(ValueError, match="floating dtype"):
        cls([torch.zeros(3, dtype=torch.int64)])
    with pytest.raises(ValueError, match="dense"):
        cls([torch.zeros(3, 3).to_sparse().requires_grad_()])
    with pytest.raises(ValueError, match="one device"):
        cls([torch.zeros(3, requires_grad=True), torch.zeros(3, device="meta", requires_grad=True)])


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_closure_must_return_a_scalar(cls):
    w, _ = quadratic()
    opt = cls([w])
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: w * 2)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("where", ["baseline", "member"])
def test_non_finite_loss_never_reaches_the_weights(cls, where):
    w, loss = quadratic()
    opt = cls([w], num_perturbations=4)
    before = w.detach().clone()
    calls = []

    def closure():
        calls.append(1)
        bad = len(calls) == (1 if where == "baseline" else 3)
        return torch.tensor(float("nan")) if bad else loss()

    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(closure)
    assert torch.equal(w.detach(), before)
    assert opt.skipped_steps == 1
    opt.step(loss)  # the next step works again
    assert not torch.equal(w.detach(), before)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_step_from_losses_checks_the_count(cls):
    w, _ = quadratic()
    opt = cls([w], num_perturbations=4)
    with pytest.raises(ValueError, match="expected 5 losses"):
        opt.step_from_losses(torch.zeros(4))


@pytest.mark.parametrize("cls", OPTIMIZERS + [df.PerturbationGradient])
def test_step_from_losses_takes_only_the_plan_of_this_step(cls):
    w, loss = quadratic()
    opt = cls([w], num_perturbations=4, seed=3)
    stale = opt.plan()
    opt.step(loss)
    w.grad = torch.ones_like(w)
    before, state = w.detach().clone(), copy.deepcopy(opt.state_dict())
    other = cls([torch.nn.Parameter(w.detach().clone())], num_perturbations=4, seed=4)
    for plan in (stale, other.plan(), cls([w], num_perturbations=2, seed=3).plan()):
        with pytest.raises(ValueError, match="plan is not the plan of"):
            opt.step_from_losses(torch.zeros(5), plan)
    with pytest.raises(TypeError, match="plan must be"):
        opt.step_from_losses(torch.zeros(5), "plan")
    assert torch.equal(w.detach(), before) and torch.equal(w.grad, torch.ones_like(w))  # nothing changed
    assert opt.state_dict()["state"]["global"] == state["state"]["global"]
    plan = opt.plan()
    losses = torch.tensor([1.0, 1.5, 0.5, 1.2, 0.8])
    assert opt.step_from_losses(losses, plan) == 1.0
    assert opt.state["global"]["step"] == 2


@pytest.mark.parametrize("memory", ["exact", "lean"])
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_state_dict_resumes_bit_exactly(cls, memory):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
        opt = cls([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}],
                  num_perturbations=6, seed=42, memory=memory)
        return model, opt

    x, y = torch.randn(8, 3), torch.randn(8, 1)
    model, opt = make()
    closure = lambda: ((model(x) - y) ** 2).mean()  # noqa: E731
    for _ in range(3):
        opt.step(closure)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(4):
        opt.step(closure)

    model2, opt2 = make()
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    closure2 = lambda: ((model2(x) - y) ** 2).mean()  # noqa: E731
    for _ in range(4):
        opt2.step(closure2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert opt.state_dict()["param_groups"] == opt2.state_dict()["param_groups"]


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_determinism_given_a_seed(cls):
    def run(seed):
        w, loss = quadratic()
        opt = cls([w], seed=seed)
        for _ in range(5):
            opt.step(loss)
        return w.detach().clone()

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_drop_in_step_is_the_written_algorithm():
    # K=2 plain members, one parameter: w <- w - lr * (1/2) sum_j (L(w + s e_j) - L(w)) e_j / s.
    g = torch.Generator().manual_seed(0)
    w0, target = torch.randn(5, generator=g), torch.randn(5, generator=g)
    f = lambda v: float(((v - target) ** 2).sum())  # noqa: E731
    w = torch.nn.Parameter(w0.clone())
    opt = df.WeightPerturbation([w], lr=0.1, sigma=0.01, num_perturbations=2, antithetic=False, seed=9)
    base = opt.step(lambda: ((w - target) ** 2).sum())
    eps = noise_reference(9, 0, 0, 0, 2, 5)
    grad = sum((f(w0 + 0.01 * eps[j]) - f(w0)) * eps[j] / 0.01 for j in range(2)) / 2
    assert base == pytest.approx(f(w0))
    torch.testing.assert_close(w.detach(), w0 - 0.1 * grad)


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("rank", [0, 2])
def test_reduces_a_quadratic(cls, rank):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 4))
    target = torch.randn(6, 4)
    loss = lambda: ((w - target) ** 2).mean()  # noqa: E731
    # Dopamine's lr is a per-coordinate step (normalised RPEs), WP's multiplies the gradient estimate.
    lr = 0.02 if cls is df.Dopamine else 0.5
    opt = cls([w], lr=lr, sigma=0.01, num_perturbations=8, rank=rank, seed=1)
    start = float(loss().detach())
    for _ in range(200):
        opt.step(loss)
    assert float(loss().detach()) < 0.2 * start


def test_param_groups_use_their_own_lr():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = df.WeightPerturbation([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.1)
    opt.step(lambda: (a**2).sum() + (b**2).sum())
    assert not torch.equal(a.detach(), torch.ones(3))
    assert torch.equal(b.detach(), torch.ones(3))


def test_evaluations_per_step_counts_closure_calls():
    w, loss = quadratic()
    calls = []
    opt = df.Dopamine([w], num_perturbations=6)
    opt.step(lambda: (calls.append(1), loss())[1])
    assert len(calls) == opt.evaluations_per_step == 7


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_max_grad_norm_clips_the_update(cls):
    def run(max_norm):
        torch.manual_seed(0)
        # float64: the clipped step is small, and float32 rounding of w + step would blur its direction.
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).double()
        x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
        before = [p.detach().clone() for p in model.parameters()]
        # Dopamine's relative step rescales each tensor after the clip: off here, so the norm is lr * max_norm.
        extra = dict(relative=False) if cls is df.Dopamine else {}
        opt = cls(model.parameters(), lr=0.3, num_perturbations=4, seed=2, max_grad_norm=max_norm, **extra)
        opt.step(lambda: ((model(x) - y) ** 2).mean())
        step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
        return step

    free, loose, tight = run(None), run(1e6), run(1e-3)
    torch.testing.assert_close(loose, free)
    assert float(tight.norm()) == pytest.approx(0.3 * 1e-3, rel=1e-4)
    torch.testing.assert_close(tight / tight.norm(), free / free.norm(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="max_grad_norm"):
        cls([torch.nn.Parameter(torch.zeros(2))], max_grad_norm=0.0)
