"""Users' own modules on the fused path (torch.fx reads their forward), the message when they cannot take it,
and the memory budget (``max_memory``): chunked evaluations give the losses of unchunked ones."""

import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import dopamine_fast as df

TIGHT = dict(rtol=1e-9, atol=1e-10)  # float64: the paths differ only by the order of roundings


class MLP(nn.Module):
    """The issue's custom module: layers called in forward."""

    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.act(self.inp(x))
        h = torch.tanh(self.mid(h))
        return self.out(h)


class Functional(nn.Module):
    """Elementwise ops as torch functions, F functions and tensor methods, a residual sum, and an activation
    whose input is read twice (so it cannot be folded into the linear op)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = F.gelu(self.a(x))
        h = h + F.silu(self.b(h))
        z = self.c(h)
        h = z.sigmoid() + F.leaky_relu(z, 0.1)
        return self.d(torch.relu(h))


class RNNReadout(nn.Module):
    """An RNN read out in one of the ways users write it."""

    def __init__(self, readout, batch_first=True):
        super().__init__()
        self.rnn = nn.RNN(3, 5, num_layers=2, batch_first=batch_first, nonlinearity="relu")
        self.head = nn.Linear(5, 2)
        self.readout = readout

    def forward(self, x):
        out, h = self.rnn(x)
        if self.readout == "h_n":
            return self.head(h[-1])
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 4)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.inp(x) * self.scale


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.inp(x)
        return -self.inp(x)


def plan_of(model, **kwargs):
    torch.manual_seed(0)
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=8, sigma=0.05, seed=5, **kwargs)
    return opt.plan()


def double(model):
    torch.manual_seed(0)
    return model.double().eval()


def data(x_shape, classes=2, batch=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(*x_shape, generator=g, dtype=torch.float64), torch.randn(batch, classes, generator=g,
                                                                                dtype=torch.float64)


CUSTOM = [
    (lambda: MLP(), (5, 6)),
    (lambda: Functional(), (5, 6)),
    (lambda: RNNReadout("h_n"), (5, 4, 3)),
    (lambda: RNNReadout("output"), (5, 4, 3)),
    (lambda: RNNReadout("output", batch_first=False), (4, 5, 3)),
]


@pytest.mark.filterwarnings("ignore:.*vmap cannot batch")  # nn.RNN on the generic path: one member at a time
@pytest.mark.parametrize("rank,antithetic", [(0, False), (2, True)])
@pytest.mark.parametrize("build,x_shape", CUSTOM)
def test_custom_modules_take_the_fused_path_with_the_generic_paths_losses(build, x_shape, rank, antithetic):
    model = double(build())
    x, y = data(x_shape)
    plan = plan_of(model, rank=rank, antithetic=antithetic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no message: the model is supported
        fused = df.Population(model)
    generic = df.Population(model, fused=False)
    torch.testing.assert_close(fused(plan, x, y), generic(plan, x, y), **TIGHT)
    assert (fused.last_path, generic.last_path) == ("fused", "generic")


def test_custom_module_step_matches_the_drop_in_step():
    a, b = double(MLP()), double(MLP())
    x, y = data((5, 6))
    opt_a = df.Dopamine(a.parameters(), num_perturbations=8, rank=1, seed=2)
    opt_b = df.Dopamine(b.parameters(), num_perturbations=8, rank=1, seed=2)
    pop = df.Population(b)
    for _ in range(2):
        expected = opt_a.step(lambda: F.mse_loss(a(x), y))
        assert opt_b.step(population=pop, inputs=x, targets=y) == pytest.approx(expected, rel=1e-12)
    assert pop.last_path == "fused"
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, **TIGHT)


def test_compiled_model_takes_the_fused_path():
    model = double(MLP())
    compiled = torch.compile(model)  # never called: Population reads the module it wraps
    x, y = data((5, 6))
    plan = plan_of(model, rank=1)
    pop = df.Population(compiled)
    torch.testing.assert_close(pop(plan, x, y), df.Population(model, fused=False)(plan, x, y), **TIGHT)
    assert pop.last_path == "fused"
    torch.testing.assert_close(df.Population(compiled, fused=False)(plan, x, y), pop(plan, x, y), **TIGHT)


@pytest.mark.parametrize("build,match", [
    (Scaled, r"tensor `scale` used outside a layer has no fused form \(test_population_trace.py:\d+: "
             r"`return self.inp\(x\) \* self.scale`\)"),
    (Branching, r"torch.fx cannot trace Branching"),
    (lambda: nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4)), r"layer 1 \(LayerNorm\) has no fused form"),
])
def test_unsupported_node_is_named_once_from_the_population_line(build, match):
    model = double(build())
    x, y = data((5, 6), classes=model(torch.zeros(1, 6, dtype=torch.float64)).shape[-1])
    with pytest.warns(UserWarning, match=match) as caught:
        pop = df.Population(model)  # the message points at this line
    assert [w.filename for w in caught] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, at construction
        pop(plan_of(model), x, y)
    assert pop.last_path == "generic"
    with pytest.raises(ValueError, match="fused=True, but the fused path cannot run"):
        df.Population(model, fused=True)


# -- the memory budget -------------------------------------------------------------------------------------


class Largest(TorchDispatchMode):
    """Bytes of the largest tensor any op creates (a fused op's output counts as one tensor)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.bytes = max(self.bytes, t.numel() * t.element_size())
        return out


def wide_mlp():
    return nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


# The fused path chunks batch rows, the generic one members (vmap cannot batch nn.RNN, whose members are
# evaluated one at a time anyway, so it has nothing to chunk).
BUDGETED = [
    (wide_mlp, (40, 6), None), (lambda: RNNReadout("h_n"), (40, 4, 3), None),
    (lambda: RNNReadout("output", batch_first=False), (4, 40, 3), None), (Functional, (40, 6), None),
    (wide_mlp, (40, 6), False), (Functional, (40, 6), False),
]


def within_budget(model, plan, x, y, fused, divisor):
    """Losses without a budget and with ``max_memory`` = the largest tensor of that run / ``divisor``; the budget,
    the largest tensors of both runs, and the paths they took."""
    whole = df.Population(model, fused=fused)
    with Largest() as unbounded:
        expected = whole(plan, x, y)
    budget = unbounded.bytes // divisor
    chunked = df.Population(model, fused=fused, max_memory=budget)
    with Largest() as bounded:
        got = chunked(plan, x, y)
    return expected, got, budget, unbounded.bytes, bounded.bytes, (whole.last_path, chunked.last_path)


@pytest.mark.parametrize("build,x_shape,fused", BUDGETED)
def test_memory_budget_keeps_the_losses_and_bounds_the_activations(build, x_shape, fused):
    model = double(build())
    x, y = data(x_shape, batch=40)
    plan = plan_of(model, rank=1, antithetic=True)
    expected, got, budget, unbounded, bounded, paths = within_budget(model, plan, x, y, fused, 3)
    torch.testing.assert_close(got, expected, **TIGHT)
    assert paths == (("generic",) * 2 if fused is False else ("fused",) * 2)
    assert bounded <= budget < unbounded


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_memory=0), "max_memory must be None or a number of bytes"),
    (dict(max_memory=1.5e9), "max_memory must be None or a number of bytes"),
    (dict(max_memory=2**20, chunk_size=4), "chunk_size or max_memory, not both"),
])
def test_bad_memory_budget(kwargs, match):
    with pytest.raises(ValueError, match=match):
        df.Population(MLP(), **kwargs)


# -- member chunks: any K in a bounded memory -----------------------------------------------------------------


def float_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))


def float_rnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.RNN(3, 16, batch_first=True), df.LastHidden(), nn.Linear(16, 2))


@pytest.mark.parametrize("rank,antithetic", [(1, True), (0, False), (2, True)])
@pytest.mark.parametrize("build,x_shape", [(float_mlp, (7, 6)), (float_rnn, (7, 5, 3))])
def test_member_chunks_give_the_unchunked_losses_bit_for_bit(build, x_shape, rank, antithetic):
    """float32, K = 1024: a budget far below the activations of all members cuts them into chunks (and splits
    antithetic pairs where a chunk ends); the losses are the same bits."""
    model = build()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(*x_shape, generator=g), torch.randn(7, 3 if build is float_mlp else 2, generator=g)
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=1024, sigma=0.05, seed=5, rank=rank,
                                antithetic=antithetic)
    expected, got, budget, _, bounded, paths = within_budget(model, opt.plan(), x, y, True, 20)
    assert paths == ("fused", "fused")
    assert torch.equal(got, expected)
    assert bounded <= budget


def test_rows_are_chunked_only_where_one_member_exceeds_the_budget():
    model = double(wide_mlp())
    x, y = data((400, 6), batch=400)
    plan = plan_of(model, rank=1, antithetic=True)
    expected = df.Population(model)(plan, x, y)
    per_member = 400 * 64 * 8  # one member's widest activation, float64 (above the weights' 32 KiB)
    chunked = df.Population(model, max_memory=per_member // 2)
    with Largest() as bounded:
        got = chunked(plan, x, y)
    torch.testing.assert_close(got, expected, **TIGHT)
    assert bounded.bytes <= per_member // 2


def test_the_budget_sizes_rnn_blocks_as_the_cpu_kernel_does():
    """fused.py's estimate mirrors the CPU RNN kernel's block sizes, which live in C++: they must not drift apart."""
    from dopamine_fast.population import fused
    source = (Path(__file__).resolve().parents[1] / "csrc" / "cpu" / "perturbed_rnn.cpp").read_text()

    def constant(name):
        return int(re.search(rf"constexpr int64_t {name} = (\d+);", source).group(1))
    assert fused.RNN_FULL_RANK_ROWS == constant("kFullRankRows")
    assert fused.RNN_LOW_RANK_BLOCK_ROWS == constant("kBlockRows")


def test_a_full_rank_rnn_keeps_whole_batches_where_a_few_members_fit():
    """The CPU full-rank RNN kernel's scratch is per thread, not per row (blocks of 128 rows): a budget of a few
    members' states chunks members only, however long the sequences, with the unbudgeted losses bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.RNN(3, 32, batch_first=True), df.LastHidden(), nn.Linear(32, 2))
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 40, 3, generator=g), torch.randn(300, 2, generator=g)
    plan = df.WeightPerturbation(model.parameters(), num_perturbations=64, sigma=0.05, seed=5).plan()
    expected = df.Population(model)(plan, x, y)
    per_member = 300 * 32 * 4  # one member's final states, float32
    chunked = df.Population(model, max_memory=12 * per_member)
    got = chunked(plan, x, y)
    assert torch.equal(got, expected)
    (members, rows), = chunked._chunks.values()
    assert rows is None and 2 <= members < 65, (members, rows)


@pytest.mark.parametrize("members,size", [(range(0, 1025), 256), (range(0, 1025), 5), (range(3, 700), 64),
                                          (range(0, 1), 8), (range(513, 514), 1), (range(0, 9), 1)])
def test_member_chunks_cover_the_members_on_the_grid(members, size):
    from dopamine_fast.population.fused import member_chunks
    chunks = member_chunks(members, size)
    assert [m for c in chunks for m in c] == list(members)
    assert all(len(c) <= size + (c.start == 0 and size > 1) for c in chunks)
    assert all(c.start == members.start or c.start == 0 or (c.start - 1) % size == 0 for c in chunks)
