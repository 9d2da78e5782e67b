"""Bad arguments to the public ops fail the same way on every backend, before any memory is read or written."""

import pytest
import torch

from dopamine_fast import backends, ops

BACKENDS = ["reference", "cpp", "triton"]
OPS = torch.ops.dopamine_fast


def _linear(x=None, w=None, b=None, sigma=0.1, members=3, rank=0, activation="tanh", stream=1):
    x = torch.randn(2, 4) if x is None else x
    w = torch.randn(5, 4) if w is None else w
    return lambda: OPS.perturbed_linear(x, w, b, 0, 0, 0, stream, sigma, members, rank, True, False, activation)


def _rnn(x=None, h0=None, bias=None, streams=(0, 1, 2, 3), sigma=0.1, members=3, nonlinearity="tanh"):
    x = torch.randn(2, 3, 4) if x is None else x
    w_ih, w_hh = torch.randn(5, 4), torch.randn(5, 5)
    return lambda: OPS.perturbed_rnn(x, h0, w_ih, w_hh, bias, None, 0, 0, list(streams), sigma, members, 0, True,
                                     False, nonlinearity, False)


def _rpe(param=None, coeffs=None):
    param = torch.zeros(5, 4) if param is None else param
    coeffs = torch.ones(3) if coeffs is None else coeffs
    return lambda: OPS.rpe_update_(param, coeffs, 0, 0, 0, 0, 1.0)


def _noise(out, first_id=0, bits=False):
    return lambda: (OPS.noise_bits_ if bits else OPS.noise_)(out, 0, 0, 0, first_id)


CASES = {
    "nan sigma": (_linear(sigma=float("nan")), "sigma must be a finite number >= 0"),
    "negative sigma": (_rnn(sigma=-0.1), "sigma must be a finite number >= 0"),
    "no members": (_linear(members=0), "num_members must be >= 1"),
    "2**32 members": (_linear(members=2**32), "num_members must be below 2**32"),
    "integer x": (_linear(x=torch.ones(2, 4, dtype=torch.int64)), "x must be floating point"),
    "integer weight": (_linear(w=torch.ones(5, 4, dtype=torch.int32)), "weight must be floating point"),
    "bad activation": (_linear(activation="gelu"), "activation must be one of"),
    "sigmoid rnn": (_rnn(nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu'"),
    "three streams": (_rnn(streams=(0, 1, 2)), "streams must hold 4 ints"),
    "stream past 2**32": (_linear(stream=2**32), "stream must be in [0, 2**32)"),
    "integer h0": (_rnn(h0=torch.zeros(2, 5, dtype=torch.int64)), "h0 must be floating point"),
    "negative rank": (_linear(rank=-1), "rank must be >= 0"),
    "1-D noise out": (_noise(torch.empty(8)), "out must be 2-D"),
    "integer noise out": (_noise(torch.empty(2, 8, dtype=torch.int32)), "out of noise_ must be floating point"),
    "float bits out": (_noise(torch.empty(2, 8), bits=True), "out of noise_bits_ must be int64"),
    "ids past 2**32": (_noise(torch.empty(2, 8), first_id=2**32 - 1), "noise ids [4294967295, 4294967297)"),
    # first_id + rows overflows int64: the range check must not wrap around and pass.
    "ids overflow int64": (_noise(torch.empty(2, 8), first_id=2**63 - 1), "noise ids [9223372036854775807, "),
    "expanded noise out": (_noise(torch.zeros(1, 8).expand(3, 8)), "out has elements that share memory"),
    "expanded param": (_rpe(param=torch.zeros(1, 4).expand(5, 4)), "param has elements that share memory"),
    # 2**32 + 1 coefficients without the memory: the reference used to loop over them for hours.
    "2**32 + 1 coeffs": (_rpe(coeffs=torch.zeros(1).expand(2**32 + 1)), "coeffs must hold at most 2**32"),
    "2-D coeffs": (_rpe(coeffs=torch.ones(3, 1)), "coeffs must be 1-D"),
    "integer coeffs": (_rpe(coeffs=torch.ones(3, dtype=torch.int64)), "coeffs must be floating point"),
}


def _op_of(case: str) -> str:
    name = CASES[case][0].__qualname__.split(".")[0]
    return {"_linear": "perturbed_linear", "_rnn": "perturbed_rnn", "_rpe": "rpe_update_",
            "_noise": "noise_bits_" if "bits" in case else "noise_"}[name]


def _error(backend: str, call):
    with backends.use_backend(backend):
        with pytest.raises(ValueError) as err:
            call()
    return str(err.value)


@pytest.mark.parametrize("case", CASES)
def test_every_backend_refuses_with_the_same_message(case):
    call, message = CASES[case]
    usable = [b for b in BACKENDS if b in backends.available_backends(_op_of(case), "cpu")]
    assert "reference" in usable
    errors = {b: _error(b, call) for b in usable}
    for backend, text in errors.items():
        assert message in text, (backend, text)
    assert len(set(errors.values())) == 1, errors  # one validation layer (ops/validation.py) for every backend


def test_rejected_calls_leave_their_outputs_alone():
    param = torch.zeros(5, 4)
    for backend in [b for b in BACKENDS if b in backends.available_backends("rpe_update_", "cpu")]:
        _error(backend, _rpe(param=param, coeffs=torch.ones(3, dtype=torch.int64)))
        assert torch.equal(param, torch.zeros(5, 4))


META = torch.device("meta")
MIXED = {
    "meta x": (_linear(x=torch.randn(2, 4, device=META)), "x is on meta but weight on cpu"),
    "meta bias": (_linear(b=torch.randn(5, device=META)), "bias is on meta but weight on cpu"),
    "meta weight": (_linear(w=torch.randn(5, 4, device=META)), "x is on cpu but weight on meta"),
    "meta h0": (_rnn(h0=torch.zeros(2, 5, device=META)), "h0 is on meta but weight_hh on cpu"),
    "meta rnn bias": (_rnn(bias=torch.zeros(5, device=META)), "bias_ih is on meta but weight_hh on cpu"),
    "meta coeffs": (_rpe(coeffs=torch.ones(3, device=META)), "coeffs is on meta but param on cpu"),
}


@pytest.mark.parametrize("case", MIXED)
def test_mixed_devices_are_refused(case):
    # A meta tensor among CPU ones used to route the call to the fake kernel, which returned uninitialised CPU
    # memory as the result (or, for rpe_update_, silently did nothing).
    call, message = MIXED[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_all_meta_still_gives_shapes():
    # Meta tensors throughout are fine: shape propagation (torch.compile, FakeTensor) relies on it.
    x, w = torch.randn(2, 4, device=META), torch.randn(5, 4, device=META)
    y = OPS.perturbed_linear(x, w, None, 0, 0, 0, 1, 0.1, 3, 0, True, False, "none")
    assert y.device == META and y.shape == (3, 2, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_python_wrappers_refuse_mixed_devices_on_every_backend(backend):
    # ops.* may call the public op's body directly (no dispatcher round trip): the checks must hold there too.
    if backend not in backends.available_backends("perturbed_linear", "cpu"):
        pytest.skip(f"{backend} is not available here")
    x, w = torch.randn(2, 4), torch.randn(5, 4)
    with backends.use_backend(backend):
        with pytest.raises(ValueError, match="bias is on meta but weight on cpu"):
            ops.perturbed_linear(x, w, torch.randn(5, device=META), 0, 0, 0, 1, 0.1, 3)
        with pytest.raises(ValueError, match="coeffs is on meta but param on cpu"):
            ops.rpe_update_(torch.zeros(5, 4), torch.ones(3, device=META), 0, 0, 0)
        with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
            ops.perturbed_rnn(torch.randn(2, 3, 4), None, torch.randn(5, 4), torch.randn(5, 5), None, None, 0, 0,
                              [0, 1, 2, 3], float("nan"), 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_python_wrappers_check_types_grad_mode_and_overlap_on_every_backend(backend):
    if backend not in backends.available_backends("rpe_update_", "cpu"):
        pytest.skip(f"{backend} is not available here")
    with backends.use_backend(backend):
        with pytest.raises(TypeError, match="seed must be an int, got str '0'"):
            ops.noise("0", 0, 0, 0, 2, 5)
        with pytest.raises(TypeError, match="num_ids must be an int, got float"):
            ops.noise(0, 0, 0, 0, 2.0, 5)
        with pytest.raises(TypeError, match="sigma must be a float, got str"):
            ops.perturbed_linear(torch.randn(2, 4), torch.randn(5, 4), None, 0, 0, 0, 1, "0.1", 3)
        with pytest.raises(TypeError, match="alpha must be a float, got str"):
            ops.rpe_update_(torch.zeros(5, 4), torch.ones(3), 0, 0, 0, 0, "1")
        assert ops.noise(0, 0, 0, 0, 0, 5).shape == (0, 5)
        assert ops.noise_bits(0, 0, 0, 0, 0, 5).shape == (0, 5)
        leaf = torch.zeros(5, 4, requires_grad=True)
        with pytest.raises(ValueError, match="param requires grad and grad mode is on"):
            ops.rpe_update_(leaf, torch.ones(3), 0, 0, 0)
        assert torch.equal(leaf.detach(), torch.zeros(5, 4))
        with torch.no_grad():  # as torch's in-place ops allow it
            ops.rpe_update_(leaf, torch.ones(3), 0, 0, 0)
        overlapping = torch.zeros(16).as_strided((3, 3), (1, 1))  # rows overlap: no stride is 0
        with pytest.raises(ValueError, match="param has elements that share memory"):
            ops.rpe_update_(overlapping, torch.ones(3), 0, 0, 0)
        ops.rpe_update_(torch.zeros(4, 6).t()[1:], torch.ones(3), 0, 0, 0)  # a transposed slice shares nothing
