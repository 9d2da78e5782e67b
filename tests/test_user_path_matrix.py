"""The path users run, at realistic sizes: ``opt.step(population=df.Population(model), ...)`` on models whose
parameters require grad, with 2 threads, so the kernels' worker threads run (issue 10: they used to fail with
"a leaf Variable that requires grad is being used in an in-place operation"). The batched path must agree with
the drop-in ``opt.step(closure)`` (losses and weights after the step), and with itself on one thread.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dopamine_fast as df

FEATURES, HIDDEN, STEPS = 16, 128, 6
# float32: the paths round differently (fused low-rank products, member GEMMs); float64 leaves only that order.
TOLERANCES = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


def mlp():
    """MLP 3x128, the layers of the issue's report."""
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def rnn():
    return nn.Sequential(nn.RNN(FEATURES, HIDDEN, batch_first=True), df.LastHidden(), nn.Linear(HIDDEN, 1))


ARCHS = {"mlp": (mlp, (FEATURES,)), "rnn": (rnn, (STEPS, FEATURES))}


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def setup(arch, num_perturbations, rank, batch, antithetic, dtype):
    """A model (parameters requiring grad, as every module's do), its optimizer and a minibatch."""
    build, shape = ARCHS[arch]
    torch.manual_seed(0)
    model = build().to(dtype)
    assert all(p.requires_grad for p in model.parameters())
    opt = df.Dopamine(model.parameters(), num_perturbations=num_perturbations, rank=rank, antithetic=antithetic,
                      seed=3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=g, dtype=dtype)
    y = torch.randn(batch, 1, generator=g, dtype=dtype)
    return model, opt, x, y


def batched_step(model, opt, x, y):
    """``opt.step(population=...)``; returns the member losses the population gave."""
    pop = df.Population(model, "mse")
    seen = []
    opt.step(population=lambda plan, inputs, targets: seen.append(pop(plan, inputs, targets)) or seen[-1],
             inputs=x, targets=y)
    assert pop.last_path == "fused"
    return seen[0]


def drop_in_step(model, opt, x, y):
    """``opt.step(closure)``; returns the member losses the closure saw, in member order."""
    seen = []

    def closure():
        seen.append(F.mse_loss(model(x), y))
        return seen[-1]

    opt.step(closure)
    return torch.stack(seen)


def assert_same_step(a, b, dtype):
    (losses_a, model_a), (losses_b, model_b) = a, b
    torch.testing.assert_close(losses_a.to(dtype), losses_b.to(dtype), **TOLERANCES[dtype])
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, **TOLERANCES[dtype])


def run(step, arch, num_perturbations, rank, batch, antithetic, dtype):
    model, opt, x, y = setup(arch, num_perturbations, rank, batch, antithetic, dtype)
    start = [p.detach().clone() for p in model.parameters()]
    losses = step(model, opt, x, y)
    assert losses.shape == (num_perturbations + 1,) and torch.isfinite(losses).all()
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start))  # the step moved the weights
    return losses, model


# The 24 small configurations, 8 of which crashed: B = 32, float32, MLP/RNN x K x rank x antithetic.
SMALL = list(itertools.product(["mlp", "rnn"], [16, 64], [0, 1, 4], [False, True]))


@pytest.mark.parametrize("arch,num_perturbations,rank,antithetic", SMALL)
def test_small_matrix_batched_matches_drop_in(arch, num_perturbations, rank, antithetic):
    case = (arch, num_perturbations, rank, 32, antithetic, torch.float32)
    assert_same_step(run(batched_step, *case), run(drop_in_step, *case), torch.float32)


# The drop-in path runs K + 1 forward passes, so it is compared at the smaller K; every batch size and dtype.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("rank", [0, 1, 4])
@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("arch", ["mlp", "rnn"])
def test_batched_matches_drop_in(arch, antithetic, rank, batch, dtype):
    case = (arch, 16, rank, batch, antithetic, dtype)
    assert_same_step(run(batched_step, *case), run(drop_in_step, *case), dtype)


def one_thread_step(model, opt, x, y):
    torch.set_num_threads(1)
    try:
        return batched_step(model, opt, x, y)
    finally:
        torch.set_num_threads(2)


# Every K: the batched path on 2 threads (worker threads, parallel member blocks) against itself on one.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("rank", [0, 1, 4])
@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("num_perturbations", [16, 64, 1024])
@pytest.mark.parametrize("arch", ["mlp", "rnn"])
def test_batched_on_two_threads_matches_one(arch, num_perturbations, antithetic, rank, batch, dtype):
    case = (arch, num_perturbations, rank, batch, antithetic, dtype)
    assert_same_step(run(batched_step, *case), run(one_thread_step, *case), dtype)


def test_batched_step_leaves_the_model_trainable_by_backprop():
    # The fused ops take detached parameters: autograd still works on the model after a batched step.
    model, opt, x, y = setup("mlp", 16, 1, 32, True, torch.float32)
    batched_step(model, opt, x, y)
    F.mse_loss(model(x), y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("rank", [0, 1, 4])
def test_ops_take_parameters_that_require_grad_on_worker_threads(rank):
    # The root of the crash, below Population (which hands the ops detached tensors): the kernels themselves
    # must not run autograd on their worker threads, whatever the caller passes. Sizes above the parallel grain.
    torch.manual_seed(0)
    layer, rnn_layer = nn.Linear(HIDDEN, HIDDEN), nn.RNN(FEATURES, HIDDEN, batch_first=True)
    x, seq = torch.randn(32, HIDDEN), torch.randn(32, STEPS, FEATURES)
    common = dict(seed=1, step=0, sigma=0.1, num_members=65, rank=rank, baseline=True, antithetic=True)
    linear = [df.ops.perturbed_linear(x, w, b, weight_stream=0, bias_stream=1, activation="tanh", **common)
              for w, b in [(layer.weight, layer.bias), (layer.weight.detach(), layer.bias.detach())]]
    tensors = [rnn_layer.weight_ih_l0, rnn_layer.weight_hh_l0, rnn_layer.bias_ih_l0, rnn_layer.bias_hh_l0]
    rnn_out = [df.ops.perturbed_rnn(seq, None, *ts, streams=[0, 1, 2, 3], **common)
               for ts in (tensors, [t.detach() for t in tensors])]
    for with_grad, detached in (linear, rnn_out):
        torch.testing.assert_close(with_grad.detach(), detached, rtol=0, atol=0)
