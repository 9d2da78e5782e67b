"""memory="lean": the drop-in step without a weight copy agrees with "exact", restores within its stated bound
whatever the closure raises, and round-trips through state_dict."""

import pytest
import torch

import dopamine_fast as df
from dopamine_fast.ops import expand_noise, low_rank_numel, noise_reference
from dopamine_fast.optim.lean import restore_bound

OPTIMIZERS = [df.WeightPerturbation, df.Dopamine, df.Dopamine2, df.PerturbationGradient]


def model_and_loss(dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2)).to(dtype)
    x, y = torch.randn(16, 6, dtype=dtype), torch.randn(16, 2, dtype=dtype)
    return model, lambda: ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("rank", [0, 2])
def test_lean_matches_exact(antithetic, rank):
    runs = {}
    for memory in ("exact", "lean"):
        model, loss = model_and_loss(torch.float64)
        opt = df.WeightPerturbation(model.parameters(), lr=0.05, num_perturbations=4, antithetic=antithetic,
                                    rank=rank, seed=3, memory=memory)
        losses = [opt.step(loss) for _ in range(5)]
        runs[memory] = (losses, [p.detach().clone() for p in model.parameters()])
    assert runs["exact"][0] == pytest.approx(runs["lean"][0], rel=1e-9)
    for a, b in zip(runs["exact"][1], runs["lean"][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_every_optimizer_takes_lean(cls):
    model, loss = model_and_loss(torch.float64)  # Dopamine2's first steps are too small to show in float32
    opt = cls(model.parameters(), num_perturbations=2, memory="lean")
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(loss)
    if cls is df.PerturbationGradient:  # writes the estimate into .grad; the weights stay (within rounding)
        for a, b in zip(before, model.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-14, atol=1e-15)
        assert all(p.grad is not None for p in model.parameters())
    else:
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def perturbation_of(opt, p, noise_id):
    """sigma * eps_j of parameter ``p`` at the optimizer's current step (float64)."""
    plan = opt.plan()
    pn = next(pn for pn in plan.params if pn.param is p)
    rank = pn.rank if p.dim() >= 2 else 0
    v = noise_reference(plan.seed, plan.step, pn.stream, noise_id, 1, low_rank_numel(p.shape, rank),
                        dtype=torch.float64)
    return pn.sigma * expand_noise(v, p.shape, rank)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("antithetic,fail_at", [(True, 2), (True, 3), (False, 2)])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_lean_restores_within_the_stated_bound(dtype, rank, antithetic, fail_at, error):
    model, loss = model_and_loss(dtype)
    opt = df.Dopamine(model.parameters(), sigma=0.1, num_perturbations=4, antithetic=antithetic, rank=rank,
                      memory="lean")
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == fail_at + 1:  # member fail_at (0 is the unperturbed model)
            raise error("interrupted")
        return loss()

    with pytest.raises(error):
        opt.step(closure)
    ids = [0, 0, 1] if antithetic else [0, 1, 2]
    for p, w in zip(model.parameters(), before):
        moved = torch.stack([perturbation_of(opt, p, j).abs() for j in ids]).amax(0)
        bound = restore_bound(w, moved)
        assert ((p.detach().double() - w.double()).abs() <= bound).all()
    assert opt.state["global"]["step"] == 0  # the step was not counted


def test_memory_is_checked():
    model, _ = model_and_loss()
    with pytest.raises(ValueError, match="memory must be one of"):
        df.Dopamine(model.parameters(), memory="small")
    opt = df.Dopamine(model.parameters())
    with pytest.raises(ValueError, match="sets memory"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "memory": "lean"})


def test_state_dict_round_trip():
    model, loss = model_and_loss()
    opt = df.Dopamine(model.parameters(), num_perturbations=2, memory="lean")
    opt.step(loss)
    state = opt.state_dict()
    assert state["state"]["global"]["memory"] == "lean"
    other = df.Dopamine(model.parameters(), num_perturbations=2)
    other.load_state_dict(state)
    assert other.state["global"]["memory"] == "lean"
    bad = {**state, "state": {**state["state"], "global": {**state["state"]["global"], "memory": "tiny"}}}
    with pytest.raises(ValueError, match="memory"):
        other.load_state_dict(bad)
    assert other.state["global"]["memory"] == "lean"
    # A state saved before the option existed keeps the loading optimizer's choice.
    old = {**state, "state": {**state["state"], "global": dict(state["state"]["global"])}}
    del old["state"]["global"]["memory"]
    other = df.Dopamine(model.parameters(), num_perturbations=2, memory="lean")
    other.load_state_dict(old)
    assert other.state["global"]["memory"] == "lean"


@pytest.mark.parametrize("cls", [df.WeightPerturbation, df.Dopamine, df.Dopamine2])
def test_the_guard_keeps_no_weight_copy_in_lean_mode_unless_asked(cls):
    """The default guard restores the best weights (one O(P) copy); lean mode keeps no copy, so it only warns,
    and an explicit "restore" is honoured."""
    def mode(**kw):
        return cls([torch.nn.Parameter(torch.zeros(3))], **kw).state["global"]["on_divergence"]

    assert (mode(), mode(memory="lean"), mode(memory="lean", on_divergence="restore")) == ("restore", "warn",
                                                                                             "restore")
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = cls([w], memory="lean")
    for _ in range(3):
        opt.step(lambda: (w ** 2).sum())
    assert "best_weights" not in opt.state[w]
