"""The optimizers under faults and bad input: failed steps, frozen parameters, loaded states, edited groups."""

import copy
import math
import random
import signal
import time
import warnings

import pytest
import torch
from torch import nn

import dopamine_fast as df
from dopamine_fast.optim import interrupts
from dopamine_fast.optim.perturbation_optimizer import MAX_PERTURBATIONS

OPTIMIZERS = [df.WeightPerturbation, df.Dopamine]


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    return model, torch.randn(8, 3), torch.randn(8, 2)


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_bit_equal(model, saved):
    for p, s in zip(model.parameters(), saved):
        assert torch.equal(p.detach(), s)


# -- a failed or interrupted step leaves the weights as they were ------------------------------------------------

class LoaderError(Exception):
    pass


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("raised", [LoaderError, KeyboardInterrupt, torch.cuda.OutOfMemoryError])
@pytest.mark.parametrize("rank", [0, 2])
def test_a_closure_that_raises_mid_step_leaves_the_weights_bit_for_bit(cls, raised, rank):
    model, x, y = model_and_data()
    opt = cls(model.parameters(), num_perturbations=4, rank=rank)
    before, calls = snapshot(model), []

    def closure():
        calls.append(1)
        if len(calls) == 3:  # member 2: the weights hold w - sigma eps_1 right now
            raise raised("the third evaluation failed")
        return ((model(x) - y) ** 2).mean()

    with pytest.raises(raised, match="third evaluation"):
        opt.step(closure)
    assert_bit_equal(model, before)
    assert opt.state["global"]["step"] == 0  # the failed step is not counted: a retry draws the same noise
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    assert not torch.equal(next(model.parameters()).detach(), before[0])


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_closure_that_calls_backward_is_told_it_needs_none(cls):
    model, x, y = model_and_data()
    opt = cls(model.parameters(), num_perturbations=2)
    before = snapshot(model)

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=r"closure called backward\(\).*under torch.no_grad.*needs no gradients"):
        opt.step(closure)
    assert_bit_equal(model, before)


# -- frozen parameters stay frozen ---------------------------------------------------------------------------------

def frozen_model(seed=0):
    model, x, y = model_and_data(seed)
    model[0].requires_grad_(False)  # a frozen "backbone"
    return model, x, y


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_frozen_parameters_are_neither_perturbed_nor_updated(cls):
    model, x, y = frozen_model()
    opt = cls(model.parameters(), num_perturbations=4)
    frozen, trained = snapshot(model[0]), snapshot(model[2])
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model[0].parameters()])
        return ((model(x) - y) ** 2).mean()

    for _ in range(3):
        opt.step(closure)
    assert all(torch.equal(a, b) for weights in seen for a, b in zip(weights, frozen))  # never perturbed
    assert_bit_equal(model[0], frozen)  # never updated
    assert not torch.equal(model[2].weight.detach(), trained[0])


def test_a_parameter_frozen_after_construction_stays_frozen_and_keeps_the_others_noise():
    model, x, y = model_and_data()
    reference = copy.deepcopy(model)
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=4, seed=3)
    ref_opt = df.WeightPerturbation(reference.parameters(), num_perturbations=4, seed=3)
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    ref_streams = {id(pn.param): pn.stream for pn in ref_opt.plan().params}
    streams = [pn.stream for pn in opt.plan().params]
    # The remaining parameters keep the streams (and so the noise) they had with nothing frozen.
    assert streams == [ref_streams[id(p)] for p in reference.parameters()][1:]
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    assert torch.equal(model[0].weight.detach(), frozen)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_frozen_parameters_give_the_same_step_in_place_and_batched(cls):
    (a, x, y), (b, _, _) = frozen_model(), frozen_model()
    a, b = a.double(), b.double()
    x, y = x.double(), y.double()
    opt_a = cls(a.parameters(), num_perturbations=4, seed=5)
    opt_b = cls(b.parameters(), num_perturbations=4, seed=5)
    pop = df.Population(b, loss="mse")
    for _ in range(3):
        opt_a.step(lambda: ((a(x) - y) ** 2).mean())
        opt_b.step(population=pop, inputs=x, targets=y)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-10)
    assert torch.equal(b[0].weight, a[0].weight)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_frozen_parameters_survive_a_resume(cls):
    def fresh():
        model, x, y = frozen_model()
        return model, cls(model.parameters(), num_perturbations=4, seed=2), x, y

    model, opt, x, y = fresh()
    for _ in range(2):
        opt.step(lambda: ((model(x) - y) ** 2).mean())
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(2):
        opt.step(lambda: ((model(x) - y) ** 2).mean())
    model2, opt2, _, _ = fresh()
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    for _ in range(2):
        opt2.step(lambda: ((model2(x) - y) ** 2).mean())
    for pa, pb in zip(model.parameters(), model2.parameters()):
        assert torch.equal(pa, pb)


def test_an_optimizer_with_nothing_to_train_warns():
    with pytest.warns(UserWarning, match="no parameter requires grad"):
        df.WeightPerturbation([torch.zeros(3)])


# -- a loaded state is validated, and a refused one changes nothing ---------------------------------------------

def trained(cls, **kwargs):
    model, x, y = model_and_data()
    opt = cls(model.parameters(), num_perturbations=4, **kwargs)
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    return opt


def corrupt_global(key, value):
    def edit(sd):
        if value is DELETE:
            del sd["state"]["global"][key]
        else:
            sd["state"]["global"][key] = value
    return edit


def corrupt_group(key, value):
    def edit(sd):
        if value is DELETE:
            del sd["param_groups"][0][key]
        else:
            sd["param_groups"][0][key] = value
    return edit


DELETE = object()
BAD_STATES = {
    "nan lr": (corrupt_group("lr", float("nan")), "lr must be a finite number"),
    "zero sigma": (corrupt_group("sigma", 0.0), "sigma must be > 0"),
    "string rank": (corrupt_group("rank", "2"), "rank must be a finite integer"),
    "missing lr": (corrupt_group("lr", DELETE), r"param group 0 of the state lacks \['lr'\]"),
    "seed in a group": (corrupt_group("seed", 3), "sets seed, options of the whole"),
    "missing seed": (corrupt_global("seed", DELETE), r"missing \['seed'\]"),
    "unknown key": (corrupt_global("temperature", 1.0), r"unexpected \['temperature'\]"),
    "no perturbations": (corrupt_global("num_perturbations", 0), "num_perturbations must be >= 1"),
    "odd antithetic": (corrupt_global("num_perturbations", 3), "must be even with antithetic"),
    "string step": (corrupt_global("step", "3"), "step must be a finite integer"),
    "negative step": (corrupt_global("step", -1), "step must be >= 0"),
    "float seed": (corrupt_global("seed", 1.5), "seed must be a finite integer"),
    "antithetic 1": (corrupt_global("antithetic", 1), "antithetic must be True or False"),
    "no global state": (lambda sd: sd["state"].pop("global"), "not saved by a perturbation optimizer"),
    "fewer groups": (lambda sd: sd["param_groups"].pop(), "param_groups must be a list of 1 groups"),
    "nan best weights": (lambda sd: sd["state"].update({0: {"best_weights": torch.full((5, 3), math.nan)}}),
                         "best_weights of parameter 0 are not all finite"),
    "best weights of another shape": (lambda sd: sd["state"].update({0: {"best_weights": torch.zeros(5)}}),
                                      r"best_weights of parameter 0 have shape \(5,\)"),
    "unknown per-parameter entry": (lambda sd: sd["state"].update({0: {"momentum": torch.zeros(5, 3)}}),
                                    r"may hold only \['best_weights'"),
}


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("case", BAD_STATES)
def test_a_bad_state_is_refused_and_changes_nothing(cls, case):
    edit, message = BAD_STATES[case]
    opt = trained(cls)
    state = copy.deepcopy(opt.state_dict())
    edit(state)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert repr(after) == repr(before)


@pytest.mark.parametrize("saver,loader", [(df.WeightPerturbation, df.Dopamine), (df.Dopamine, df.WeightPerturbation)])
def test_a_state_of_another_optimizer_class_is_refused(saver, loader):
    state = trained(saver).state_dict()
    target = trained(loader)
    with pytest.raises(ValueError, match=f"saved by {saver.__name__}, not {loader.__name__}"):
        target.load_state_dict(state)
    del state["state"]["global"]["optimizer"]  # a state saved before the class was recorded: the keys tell
    with pytest.raises(ValueError, match="does not fit"):
        target.load_state_dict(state)


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("key,value,message", [
    ("lr", float("nan"), "lr must be a finite number"), ("sigma", 0.0, "sigma must be > 0"),
    ("lr", -1.0, "lr must be >= 0"), ("sigma", 1e300, "sigma must be <= 1000000.0"),
])
def test_groups_edited_between_steps_are_checked_before_the_weights_move(cls, key, value, message):
    model, x, y = model_and_data()
    opt = cls(model.parameters(), num_perturbations=2)
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    opt.param_groups[0][key] = value
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        opt.step(lambda: ((model(x) - y) ** 2).mean())
    assert_bit_equal(model, before)


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("key", ["num_perturbations", "seed", "antithetic"])
def test_global_options_in_a_param_group_are_refused(cls, key):
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match=f"a param group sets {key}, which only the whole"):
        cls([{"params": model.parameters(), key: 2}])


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("kwargs,message", [
    (dict(num_perturbations=2**32, antithetic=False), f"num_perturbations must be <= {MAX_PERTURBATIONS}"),
    (dict(num_perturbations=2**40), f"num_perturbations must be <= {MAX_PERTURBATIONS}"),
    (dict(sigma=1e300), "sigma must be <= 1000000.0"),
    (dict(sigma=math.inf), "sigma must be a finite number"),
])
def test_absurd_sizes_are_refused_at_construction(cls, kwargs, message):
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match=message):
        cls(model.parameters(), **kwargs)


# -- the generic Population path leaves the model's buffers to the members ---------------------------------------

def test_a_failed_vmap_attempt_does_not_count_a_batchnorm_batch():
    def buffers_after_one_evaluation(try_vmap_first):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
        opt = df.WeightPerturbation(model.parameters(), num_perturbations=2)
        pop = df.Population(model, fused=False)
        pop.generic.batches_with_vmap = try_vmap_first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pop(opt.plan(), torch.randn(8, 3), torch.randn(8, 1))
        return [b.clone() for b in model.buffers()]

    # BatchNorm in training mode cannot run under vmap; the attempt must not leave a trace in the buffers.
    for a, b in zip(buffers_after_one_evaluation(True), buffers_after_one_evaluation(False)):
        assert torch.equal(a, b)


# -- a step is atomic against Ctrl-C ---------------------------------------------------------------------------------

def deep_model(seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(50):  # 100 parameter tensors
        layers += [nn.Linear(4, 4), nn.Tanh()]
    return nn.Sequential(*layers), torch.randn(16, 4), torch.randn(16, 4)


@pytest.fixture
def default_ctrl_c():
    """Ctrl-C raising KeyboardInterrupt, as in an interactive session, whatever handler an earlier test left."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def step_with_sigint_after(delay, step):
    """Runs ``step()`` with a real SIGINT sent ``delay`` seconds in; True when it raised KeyboardInterrupt."""
    armed = [True]

    def alarm(signum, frame):
        if armed[0]:
            signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, delay)
            step()
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGALRM, previous)
    return False


def test_a_ctrl_c_pending_when_grad_mode_is_restored_leaves_it_on(monkeypatch):
    """A Ctrl-C pending when the mode is restored: Python raises it at the entry of the next Python function, so
    a restore through one (``torch.set_grad_enabled(...)``, a class) would be skipped and leave grad mode off."""
    def interrupted_at_entry(mode):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "set_grad_enabled", interrupted_at_entry)
    interrupts.no_grad(lambda: None)()
    monkeypatch.undo()
    assert torch.is_grad_enabled()


@pytest.fixture
def one_thread():
    """Steps of a predictable length on a busy machine (idle torch threads spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_ctrl_c_right_after_grad_mode_is_switched_off_leaves_it_on(monkeypatch):
    """The window ``torch.no_grad().__enter__`` leaves open (mode off, the ``with`` block not yet entered): a
    KeyboardInterrupt there must not leave grad mode off for the rest of the session."""
    switch = torch._C._set_grad_enabled

    def switch_then_interrupt(mode):
        switch(mode)
        if not mode:
            raise KeyboardInterrupt

    monkeypatch.setattr(torch._C, "_set_grad_enabled", switch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupts.no_grad(lambda: None)()
    monkeypatch.undo()
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("path", ["closure", "population"])
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_ctrl_c_anywhere_in_a_step_leaves_the_weights_before_or_after_it_bit_for_bit(cls, path, one_thread,
                                                                                    default_ctrl_c):
    model, x, y = deep_model()
    opt = cls(model.parameters(), num_perturbations=4, seed=1)
    pop = df.Population(model, loss="mse") if path == "population" else None

    def step_of(m, o, p):
        if p is not None:
            return lambda: o.step(population=p, inputs=x, targets=y)
        return lambda: o.step(lambda: ((m(x) - y) ** 2).mean())

    step_of(model, opt, pop)()  # warm-up: a first step can take many times longer than the next ones
    durations = []
    for _ in range(3):  # the shortest of a few steps, so that interrupts land inside steps even on a busy machine
        start = time.perf_counter()
        step_of(model, opt, pop)()
        durations.append(time.perf_counter() - start)
    duration = min(durations)
    rng = random.Random(0)
    outcomes = {"before": 0, "after": 0}
    for _ in range(60):
        before, counted = snapshot(model), opt.state["global"]["step"]
        clone = copy.deepcopy(model)
        clone_opt = cls(clone.parameters(), num_perturbations=4, seed=1)
        clone_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        if pop is None:
            step_of(clone, clone_opt, None)()
        else:  # the same losses, from the model (whose weights the clone's equal)
            clone_opt.step_from_losses(pop(opt.plan(), x, y))
        after = snapshot(clone)
        interrupted = step_with_sigint_after(rng.uniform(1e-5, 1.2 * duration), step_of(model, opt, pop))
        assert torch.is_grad_enabled()  # the step's no-grad mode never outlives it, even when interrupted
        if not interrupted:
            outcomes["after"] += 1
            assert_bit_equal(model, after)
            continue
        now = snapshot(model)
        if all(torch.equal(a, b) for a, b in zip(now, before)):
            outcomes["before"] += 1
            assert opt.state["global"]["step"] == counted  # the interrupted step is not counted
        else:
            outcomes["after"] += 1
            assert_bit_equal(model, after)
            assert opt.state["global"]["step"] == counted + 1
    assert outcomes["before"] > 0, f"no interrupt landed inside a step: {outcomes}, step {duration:.2e} s"


# -- finite losses never put a non-finite number into the weights ---------------------------------------------------

@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_an_absurd_learning_rate_is_refused(cls):
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match="lr must be <= 1000000.0"):
        cls(model.parameters(), lr=1e300)


# (optimizer, weights' dtype, their value, sigma, lr, loss slope, max_grad_norm): finite losses whose update is not
NON_FINITE_UPDATES = {
    "float16 update": (df.WeightPerturbation, torch.float16, 1.0, 0.05, 1e6, 1e3, None),
    "float16 update (Dopamine)": (df.Dopamine, torch.float16, 1.0, 0.05, 1e6, 1e3, None),
    "float16 coefficients": (df.WeightPerturbation, torch.float16, 1.0, 0.05, 1e-6, 1e8, None),
    "float16 weights near their largest number": (df.WeightPerturbation, torch.float16, 6e4, 64.0, 0.2, 1e4, None),
    "float32 update": (df.WeightPerturbation, torch.float32, 1.0, 0.05, 1e6, 1e35, None),
    "clipped float16 update": (df.WeightPerturbation, torch.float16, 1.0, 0.05, 1e-3, 1e5, 1e30),
}


@pytest.mark.parametrize("case", NON_FINITE_UPDATES)
def test_an_update_that_would_not_be_finite_skips_the_step(case):
    cls, dtype, start, sigma, lr, slope, max_grad_norm = NON_FINITE_UPDATES[case]
    weight = nn.Parameter(torch.full((4,), start, dtype=dtype))
    opt = cls([weight], lr=lr, sigma=sigma, num_perturbations=2, max_grad_norm=max_grad_norm)
    state = copy.deepcopy(opt.state_dict()["state"]["global"])
    with pytest.warns(RuntimeWarning, match="non-finite update"):
        loss = opt.step(lambda: -slope * weight.double().sum())
    assert math.isfinite(loss)
    assert torch.equal(weight.detach(), torch.full((4,), start, dtype=dtype))
    assert opt.skipped_steps == 1 and opt.state["global"]["step"] == 1
    kept = ("step", "skipped_steps", "divergence")  # the rest (Dopamine's signals) is as before the step
    assert ({k: v for k, v in opt.state_dict()["state"]["global"].items() if k not in kept}
            == {k: v for k, v in state.items() if k not in kept})


def test_a_non_finite_update_of_one_group_leaves_every_group_unwritten():
    small, big = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.ones(4))
    opt = df.WeightPerturbation([{"params": [small]}, {"params": [big], "lr": 1e6}], num_perturbations=2)
    with pytest.warns(RuntimeWarning, match="non-finite update"):
        opt.step(lambda: -1e35 * (small.double().sum() + big.double().sum()))
    assert torch.equal(small.detach(), torch.zeros(4)) and torch.equal(big.detach(), torch.ones(4))


def test_an_infinite_spectral_radius_is_refused():
    w = torch.randn(4, 4)
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        df.rescale_spectral_radius_(w, math.inf)


# -- Python-float and complex losses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_python_float_loss_keeps_float64_precision(cls):
    runs = []
    for as_float in (False, True):
        model, x, y = model_and_data()
        model, x, y = model.double(), x.double(), y.double()
        opt = cls(model.parameters(), sigma=1e-6, num_perturbations=4, seed=3)
        for _ in range(3):
            opt.step(lambda: (lambda loss: loss.item() if as_float else loss)(((model(x) - y) ** 2).mean()))
        runs.append(snapshot(model))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_a_large_finite_float_loss_is_not_taken_for_a_non_finite_one():
    model, x, y = model_and_data()
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert opt.step(lambda: 1e39 + float(((model(x) - y) ** 2).mean())) == pytest.approx(1e39)
        opt.step_from_losses([1e39, 1e39, 1e39])
    assert opt.skipped_steps == 0


def test_a_complex_loss_is_refused():
    model, x, y = model_and_data()
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=2)
    before = snapshot(model)
    with pytest.raises(TypeError, match="real scalar loss"):
        opt.step(lambda: ((model(x) - y) ** 2).mean() * (1 + 1j))
    with pytest.raises(TypeError, match="real floating-point"):
        opt.step_from_losses(torch.ones(3, dtype=torch.complex64))
    assert_bit_equal(model, before)


# -- hyperparameters of the wrong type or size -------------------------------------------------------------------------

@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("kwargs,message", [
    (dict(antithetic="False"), "antithetic must be True or False, got 'False'"),
    (dict(antithetic=1), "antithetic must be True or False, got 1"),
    (dict(rank=2**40), "rank 1099511627776 is too large for the parameter of shape"),
])
def test_wrong_types_and_sizes_are_refused_at_construction(cls, kwargs, message):
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match=message):
        cls(model.parameters(), **kwargs)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_numpy_scalars_become_python_numbers_and_the_state_loads_with_weights_only(cls, tmp_path):
    np = pytest.importorskip("numpy")
    model, x, y = model_and_data()
    opt = cls(model.parameters(), lr=np.float64(0.05), sigma=np.float32(0.1), rank=np.int64(0),
              num_perturbations=np.int64(4), seed=np.int64(3), antithetic=np.bool_(True))
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    opt.param_groups[0]["lr"] = np.float64(0.01)  # edited later: converted at the next step
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    state = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert type(state["param_groups"][0]["lr"]) is float and type(state["state"]["global"]["seed"]) is int


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("key,value", [("num_perturbations", 8), ("seed", 5), ("antithetic", False)])
def test_options_of_the_whole_optimizer_edited_into_a_group_are_refused_at_step(cls, key, value):
    model, x, y = model_and_data()
    opt = cls(model.parameters(), num_perturbations=4)
    opt.param_groups[0][key] = value
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"a param group sets {key}, which only the whole"):
        opt.step(lambda: ((model(x) - y) ** 2).mean())
    assert_bit_equal(model, before)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_parameter_listed_twice_in_one_group_is_refused(cls):
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match="lists a parameter more than once"):
        cls([model[0].weight, model[0].weight, model[2].weight])


def test_deferred_interrupts_deliver_every_signal_to_the_handler_they_were_meant_for():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # records, like the CLI's
    try:
        with interrupts.deferred_interrupts() as deferral:
            signal.raise_signal(signal.SIGINT)
            assert seen == []  # a critical section: it waits
            with deferral.allowed():
                assert seen == [signal.SIGINT]  # delivered on entering the interruptible stretch
                signal.raise_signal(signal.SIGINT)
                assert len(seen) == 2  # inside it, at once: the stretch stays open after a handler that returns
            signal.raise_signal(signal.SIGINT)
            assert len(seen) == 2
        assert len(seen) == 3 and signal.getsignal(signal.SIGINT) is not None
    finally:
        signal.signal(signal.SIGINT, previous)
