"""Population: batched member losses equal the drop-in step's, on the fused and the generic path; bad input."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import dopamine_fast as df
from dopamine_fast.population import losses as member_loss

K = 6
TORCH_LOSSES = {"mse": F.mse_loss, "bce": F.binary_cross_entropy_with_logits, "cross_entropy": F.cross_entropy}
TIGHT = dict(rtol=1e-9, atol=1e-10)  # float64 models: the paths differ only by the order of roundings


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.Tanh(), nn.Dropout(0.3), nn.Linear(7, 7), nn.GELU(),
                         nn.Identity(), nn.Sequential(nn.Linear(7, 3), nn.Sigmoid()))


def rnn(layers=1, batch_first=True, nonlinearity="tanh", bias=True):
    return nn.Sequential(nn.RNN(3, 5, num_layers=layers, batch_first=batch_first, nonlinearity=nonlinearity,
                                bias=bias), df.LastHidden(), nn.Linear(5, 2))


def cnn():
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(48), nn.Linear(48, 4))


class Residual(nn.Module):
    """A user's own module: a custom forward the fused path cannot read."""

    def __init__(self):
        super().__init__()
        self.inp, self.mix = nn.Linear(4, 6), nn.Linear(6, 6)
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return (h + self.mix(h)) * self.scale


def data(shape, target_shape, seed=0, classes=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if classes:
        return x, torch.randint(classes, target_shape, generator=g)
    return x, torch.rand(*target_shape, generator=g, dtype=torch.float64)


def make_pair(build, optimizer=df.WeightPerturbation, param_groups=None, **opt_kwargs):
    """Two identical float64 models, each with its own optimizer of the same seed."""
    torch.manual_seed(0)
    a = build().double().eval()
    b = copy.deepcopy(a)
    kwargs = dict(lr=0.1, sigma=0.05, num_perturbations=K, seed=7, **opt_kwargs)
    groups = param_groups or (lambda m: m.parameters())
    return (a, optimizer(groups(a), **kwargs)), (b, optimizer(groups(b), **kwargs))


def sequential_step(model, opt, x, y, loss):
    """A drop-in step; returns the 1+K member losses the closure saw, in member order."""
    seen = []

    def closure():
        value = TORCH_LOSSES[loss](model(x), y)
        seen.append(float(value))
        return value

    opt.step(closure)
    return torch.tensor(seen, dtype=torch.float64)


def batched_step(pop, opt, x, y):
    """A population step; returns the 1+K member losses the population gave."""
    seen = []

    def recording(plan, inputs, targets):
        seen.append(pop(plan, inputs, targets))
        return seen[-1]

    opt.step(population=recording, inputs=x, targets=y)
    return seen[0]


def assert_paths_agree(build, x, y, loss, steps=2, population_kwargs=None, expected_path="fused", **pair_kwargs):
    (a, opt_a), (b, opt_b) = make_pair(build, **pair_kwargs)
    start = [p.detach().clone() for p in b.parameters()]
    pop = df.Population(b, loss, **(population_kwargs or {}))
    for _ in range(steps):
        expected = sequential_step(a, opt_a, x, y, loss)
        got = batched_step(pop, opt_b, x, y)
        assert got.shape == (K + 1,)
        torch.testing.assert_close(got.double(), expected, **TIGHT)
    assert pop.last_path == expected_path
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, **TIGHT)
    assert any(not torch.equal(p, p0) for p, p0 in zip(b.parameters(), start))  # the steps did move the weights


RANK_ANTITHETIC = [(0, False), (0, True), (2, False), (2, True)]


@pytest.mark.parametrize("rank,antithetic", RANK_ANTITHETIC)
@pytest.mark.parametrize("optimizer", [df.WeightPerturbation, df.Dopamine])
def test_mlp_fused_matches_drop_in(rank, antithetic, optimizer):
    x, y = data((5, 2, 3), (5, 3))
    assert_paths_agree(mlp, x, y, "mse", rank=rank, antithetic=antithetic, optimizer=optimizer)


@pytest.mark.parametrize("rank,antithetic", RANK_ANTITHETIC)
@pytest.mark.parametrize("layers,batch_first,nonlinearity,bias", [
    (1, True, "tanh", True), (1, False, "relu", False), (2, True, "relu", True), (2, False, "tanh", False)])
def test_rnn_with_readout_fused_matches_drop_in(rank, antithetic, layers, batch_first, nonlinearity, bias):
    x, y = data((4, 3, 3) if batch_first else (3, 4, 3), (4, 2))
    assert_paths_agree(lambda: rnn(layers, batch_first, nonlinearity, bias), x, y, "bce", rank=rank,
                       antithetic=antithetic)


@pytest.mark.parametrize("rank,antithetic", RANK_ANTITHETIC)
def test_cnn_generic_matches_drop_in(rank, antithetic):
    x, y = data((4, 2, 6, 6), (4,), classes=4)
    assert_paths_agree(cnn, x, y, "cross_entropy", population_kwargs=dict(fused=False, chunk_size=3),
                       expected_path="generic", rank=rank, antithetic=antithetic)


def test_user_module_and_callable_loss_on_the_generic_path():
    x, y = data((5, 4), (5, 6))
    (a, opt_a), (b, opt_b) = make_pair(Residual, antithetic=True)
    huber = lambda out, t: F.huber_loss(out, t.expand_as(out), reduction="none").flatten(1).mean(1)  # noqa: E731
    pop = df.Population(b, huber, chunk_size=2)
    for _ in range(2):
        expected = []
        opt_a.step(lambda: expected.append(F.huber_loss(a(x), y)) or expected[-1])
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            got = batched_step(pop, opt_b, x, y)
        torch.testing.assert_close(got, torch.stack(expected), **TIGHT)
    assert pop.last_path == "generic"
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, **TIGHT)


def test_lstm_goes_member_by_member_with_one_message_each():
    x, y = data((4, 3, 3), (4, 2))
    build = lambda: nn.Sequential(nn.LSTM(3, 4, batch_first=True), df.LastHidden(), nn.Linear(4, 2))  # noqa: E731
    (a, opt_a), (b, opt_b) = make_pair(build, antithetic=True, rank=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pop = df.Population(b, "mse", chunk_size=4)
        for _ in range(2):
            torch.testing.assert_close(batched_step(pop, opt_b, x, y), sequential_step(a, opt_a, x, y, "mse"),
                                       **TIGHT)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "layer 0 (LSTM) has no fused form" in messages[0] and "generic path" in messages[0]
    assert "vmap cannot batch" in messages[1]


@pytest.mark.parametrize("build,shape,target,kwargs", [
    (cnn, (4, 2, 6, 6), (4,), dict(loss="cross_entropy", fused=False, classes=4)),
    (mlp, (5, 2, 3), (5, 3), dict(loss="mse", fused=False)),
])
def test_chunking_does_not_change_results(build, shape, target, kwargs):
    kwargs = dict(kwargs)
    x, y = data(shape, target, classes=kwargs.pop("classes", None))
    (model, opt), _ = make_pair(build, antithetic=True, rank=2)
    plan = opt.plan()
    results = [df.Population(model, chunk_size=c, **kwargs)(plan, x, y) for c in (1, 2, 5, None)]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-12, atol=1e-12)


def test_fused_and_generic_paths_agree():
    x, y = data((5, 2, 3), (5, 3))
    (model, opt), _ = make_pair(mlp, rank=3)
    fused = df.Population(model, "mse", fused=True)
    generic = df.Population(model, "mse", fused=False, chunk_size=4)
    torch.testing.assert_close(fused(opt.plan(), x, y), generic(opt.plan(), x, y), **TIGHT)
    assert (fused.last_path, generic.last_path) == ("fused", "generic")


def test_frozen_layers_stay_unperturbed_on_the_fused_path():
    x, y = data((5, 2, 3), (5, 3))
    trained = lambda m: list(m[4].parameters()) + list(m[7].parameters())  # noqa: E731  (the first Linear frozen)
    assert_paths_agree(mlp, x, y, "mse", param_groups=trained, rank=1)


def test_layer_with_mixed_sigmas_falls_back_once_and_still_agrees():
    x, y = data((5, 2, 3), (5, 3))
    groups = lambda m: [{"params": [m[1].weight]}, {"params": [m[1].bias], "sigma": 0.01},  # noqa: E731
                        {"params": list(m[4].parameters()) + list(m[7].parameters())}]
    with pytest.warns(UserWarning, match="different sigmas") as caught:
        assert_paths_agree(mlp, x, y, "mse", param_groups=groups, expected_path="generic")
    assert len([w for w in caught if "different sigmas" in str(w.message)]) == 1


class Recorder(TorchDispatchMode):
    """The number of elements of every tensor an op creates (a fused op counts as one op)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.sizes.append(t.numel())
        return out


@pytest.mark.parametrize("build,x_shape", [
    (lambda: nn.Sequential(nn.Linear(48, 64), nn.Tanh(), nn.Linear(64, 64), nn.Linear(64, 2)), (2, 48)),
    (lambda: nn.Sequential(nn.RNN(48, 64, num_layers=2, batch_first=True), df.LastHidden(), nn.Linear(64, 2)),
     (2, 3, 48)),
])
def test_fused_path_never_holds_a_copy_of_the_parameters_per_member(build, x_shape):
    members = 1 + 64
    model = build()
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=members - 1, rank=0)
    x, y = torch.randn(*x_shape), torch.randn(x_shape[0], 2)
    pop = df.Population(model, fused=True)
    with Recorder() as rec:
        losses = pop(opt.plan(), x, y)
    assert losses.shape == (members,)
    largest_activation = members * x.numel() // 48 * 64  # [M, B, (T,) hidden]
    biggest_param = max(p.numel() for p in model.parameters())
    assert max(rec.sizes) <= largest_activation < members * biggest_param // 4


def test_generic_path_holds_at_most_one_chunk():
    model = cnn()
    members, chunk = 41, 4
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=members - 1, rank=0)
    x, y = torch.randn(2, 2, 6, 6), torch.randint(4, (2,))
    with Recorder() as rec:
        df.Population(model, "cross_entropy", fused=False, chunk_size=chunk)(opt.plan(), x, y)
    # Per member, no tensor outgrows the largest parameter or the shared input (activations are smaller here).
    per_member = max(max(p.numel() for p in model.parameters()), x.numel())
    assert max(rec.sizes) <= chunk * per_member < members * per_member // 4


def test_step_with_population_matches_step_from_losses():
    x, y = data((5, 2, 3), (5, 3))
    (a, opt_a), (b, opt_b) = make_pair(mlp, optimizer=df.Dopamine)
    pop_a, pop_b = df.Population(a), df.Population(b)
    base = opt_a.step(population=pop_a, inputs=x, targets=y)
    plan = opt_b.plan()
    losses = pop_b(plan, x, y)
    assert base == opt_b.step_from_losses(losses, plan) == float(losses[0])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="closure or a population"):
        opt_a.step(lambda: torch.tensor(0.0), population=pop_a, inputs=x, targets=y)


# -- bad input ------------------------------------------------------------------------------------------------


def test_model_without_trainable_parameters():
    with pytest.raises(ValueError, match="Sequential has no trainable parameters"):
        df.Population(nn.Sequential(nn.Tanh(), nn.Flatten()))
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="Linear has no trainable parameters"):
        df.Population(frozen)
    with pytest.raises(TypeError, match="nn.Module"):
        df.Population(lambda x: x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(fused="yes"), "fused"), (dict(chunk_size=0), "chunk_size"), (dict(loss="l1"), "loss must be one of"),
    (dict(loss=3), "loss must be one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        df.Population(mlp(), **kwargs)


def test_inputs_that_do_not_fit_the_model():
    (model, opt), _ = make_pair(mlp)
    with pytest.raises(ValueError, match=r"layer 1 \(Linear.*\) expects inputs of shape \[\.\.\., 6\], got \(5, 8\)"
                       r"; the model's inputs have shape \(5, 2, 4\)"):
        df.Population(model)(opt.plan(), torch.randn(5, 2, 4, dtype=torch.float64), torch.randn(5, 3))
    (model, opt), _ = make_pair(lambda: rnn(batch_first=False))
    with pytest.raises(ValueError, match=r"expects inputs of shape \[seq, batch, 3\], got \(4, 3\)"):
        df.Population(model)(opt.plan(), torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2))
    (model, opt), _ = make_pair(cnn)
    pop = df.Population(model, "cross_entropy", fused=False)
    with pytest.raises(ValueError, match=r"Sequential failed on inputs of shape \(4, 3, 6, 6\)"):
        pop(opt.plan(), torch.randn(4, 3, 6, 6, dtype=torch.float64), torch.zeros(4, dtype=torch.long))


def test_targets_and_losses_that_do_not_fit():
    (model, opt), _ = make_pair(mlp)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"mse loss needs targets of shape \(5, 3\) for model outputs of shape "
                                         r"\(5, 3\) \(per member\), got targets of shape \(5,\)"):
        df.Population(model)(opt.plan(), x, torch.randn(5, dtype=torch.float64))
    scalar = lambda out, t: ((out - t) ** 2).mean()  # noqa: E731
    with pytest.raises(ValueError, match=rf"one value per member, shape \({K + 1},\), for outputs of shape "
                                         rf"\({K + 1}, 5, 3\) \(members first\); it returned \(\)"):
        df.Population(model, scalar)(opt.plan(), x, torch.randn(5, 3, dtype=torch.float64))


def test_plan_of_another_model_is_refused():
    (model, _), (other, other_opt) = make_pair(mlp)
    with pytest.raises(ValueError, match=r"not parameters of Sequential \(shapes \[\(7, 6\)"):
        df.Population(model)(other_opt.plan(), torch.randn(5, 6), torch.randn(5, 3))


def test_unsupported_module_falls_back_once_or_raises_when_fused_is_demanded():
    x, y = data((4, 2, 6, 6), (4,), classes=4)
    (model, opt), _ = make_pair(cnn)
    with pytest.warns(UserWarning, match=r"layer 0 \(Conv2d\) has no fused form; Sequential is evaluated on the "
                                         r"generic path") as caught:
        pop = df.Population(model, "cross_entropy")  # the message points at this line
        pop(opt.plan(), x, y)
        pop(opt.plan(), x, y)
    assert [w.filename for w in caught if "fused form" in str(w.message)] == [__file__]
    with pytest.raises(ValueError, match=r"fused=True, but the fused path cannot run Sequential: layer 0 \(Conv2d"):
        df.Population(model, "cross_entropy", fused=True)
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) reads an RNN's output other than its final hidden"):
        df.Population(nn.Sequential(nn.RNN(3, 4), nn.Linear(4, 2)), fused=True)


def test_dropout_in_training_mode_is_not_fused():
    (model, opt), _ = make_pair(mlp)
    model.train()
    x, y = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Dropout\(p=0.3.*training mode"):
        df.Population(model, fused=True)(opt.plan(), x, y)
    with pytest.warns(UserWarning, match="training mode"):
        df.Population(model)(opt.plan(), x, y)
    model.eval()
    pop = df.Population(model, fused=True)
    pop(opt.plan(), x, y)
    assert pop.last_path == "fused"


# -- per-member losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,targets", [
    ("mse", torch.randn(4, 3)), ("bce", torch.rand(4, 3)), ("cross_entropy", torch.tensor([0, 2, -100, 1])),
    ("cross_entropy", torch.softmax(torch.randn(4, 3), 1)),
])
def test_builtin_losses_are_torch_losses_per_member(name, targets):
    outputs = torch.randn(5, 4, 3)
    got = member_loss.BUILTIN[name](outputs, targets)
    expected = torch.stack([TORCH_LOSSES[name](o, targets) for o in outputs])
    torch.testing.assert_close(got, expected)


# -- a model changed after the Population was built ----------------------------------------------------------------

@pytest.mark.parametrize("change", ["replace a layer", "replace an activation", "reassign a weight"])
def test_a_model_changed_after_the_population_was_built_is_read_again(change):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    pop = df.Population(model, loss="mse", fused=True)
    pop(df.WeightPerturbation(model.parameters(), num_perturbations=2).plan(), x, y)
    if change == "replace a layer":
        model[2] = nn.Linear(5, 2)
    elif change == "replace an activation":
        model[1] = nn.ReLU()
    else:
        model[0].weight = nn.Parameter(torch.randn(5, 3))
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=2)
    losses = pop(opt.plan(), x, y)
    assert pop.last_path == "fused"
    torch.testing.assert_close(losses[0], ((model(x) - y) ** 2).mean())


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_sequence_of_length_zero_is_refused_like_nn_rnn(batch_first):
    rnn = nn.RNN(3, 4, batch_first=batch_first)
    model = nn.Sequential(rnn, df.LastHidden(), nn.Linear(4, 1))
    x = torch.zeros(2, 0, 3) if batch_first else torch.zeros(0, 2, 3)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        model(x)
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=2)
    with pytest.raises(ValueError, match="got a sequence of length 0; like nn.RNN"):
        df.Population(model, fused=True)(opt.plan(), x, torch.zeros(2, 1))
