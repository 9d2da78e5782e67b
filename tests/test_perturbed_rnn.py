"""perturbed_rnn: the reference against nn.RNN with explicit member weights; every backend against the reference."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs

from dopamine_fast import ops, use_backend
from dopamine_fast.ops import expand_noise, low_rank_numel, member_noise_ids, noise_reference, num_noise_ids

K, B, T, IN, H = 3, 5, 7, 3, 13
ARGS = dict(seed=99, step=2, streams=[4, 5, 6, 7], sigma=0.05)


def make(dtype, shared, device="cpu", with_h0=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, IN) if shared else (K, B, T, IN), generator=g, dtype=dtype)
    params = [torch.randn(H, IN, generator=g, dtype=dtype) / 2, torch.randn(H, H, generator=g, dtype=dtype) / H**0.5,
              torch.randn(H, generator=g, dtype=dtype) / 4, torch.randn(H, generator=g, dtype=dtype) / 4]
    h0 = torch.randn((K, B, H) if not shared else (B, H), generator=g, dtype=dtype) if with_h0 else None
    return x.to(device), (None if h0 is None else h0.to(device)), [p.to(device) for p in params]


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_reference_matches_nn_rnn(rank, nonlinearity):
    x, h0, params = make(torch.float64, shared=False, with_h0=True)
    with use_backend("reference"):
        got = ops.perturbed_rnn(x, h0, *params, num_members=K, rank=rank, baseline=True, antithetic=True,
                                nonlinearity=nonlinearity, return_sequence=True, **ARGS)
    ids, signs = member_noise_ids(K, True, True)
    n = num_noise_ids(K, True, True)
    eps = [expand_noise(noise_reference(99, 2, s, 0, n, low_rank_numel(p.shape, rank), dtype=p.dtype), p.shape, rank)
           for p, s in zip(params, ARGS["streams"])]
    rnn = torch.nn.RNN(IN, H, nonlinearity=nonlinearity, batch_first=True, dtype=torch.float64)
    for k in range(K):
        with torch.no_grad():
            for p, name, e in zip(params, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), eps):
                getattr(rnn, name).copy_(p + 0.05 * signs[k] * e[ids[k]])
            expected, _ = rnn(x[k], h0[k][None])
        torch.testing.assert_close(got[k], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_rnn"))
def test_backend_matches_reference(backend, device, nonlinearity, rank, dtype):
    for shared, with_h0, antithetic, return_sequence in ((True, False, False, False), (False, True, True, True)):
        x, h0, params = make(dtype, shared, device, with_h0)
        kwargs = dict(num_members=K, rank=rank, baseline=True, antithetic=antithetic, nonlinearity=nonlinearity,
                      return_sequence=return_sequence, **ARGS)
        with use_backend("reference"):
            expected = ops.perturbed_rnn(x.cpu(), None if h0 is None else h0.cpu(), *[p.cpu() for p in params],
                                         **kwargs)
        with use_backend(backend):
            got = ops.perturbed_rnn(x, h0, *params, **kwargs)
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_rnn"))
def test_backend_without_biases(backend, device):
    x, _, params = make(torch.float32, True, device)
    kwargs = dict(num_members=K, rank=0, baseline=True, antithetic=False, nonlinearity="tanh",
                  return_sequence=False, **ARGS)
    with use_backend("reference"):
        expected = ops.perturbed_rnn(x.cpu(), None, params[0].cpu(), params[1].cpu(), None, None, **kwargs)
    with use_backend(backend):
        got = ops.perturbed_rnn(x, None, params[0], params[1], None, None, **kwargs)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_rnn"))
def test_backend_one_bias_member_h0_shared_x(backend, device, rank):
    # Mixed cases: shared input with per-member initial states, only bias_ih (each bias has its own flag).
    x, _, params = make(torch.float32, True, device)
    h0 = torch.randn(K, B, H, generator=torch.Generator().manual_seed(2)).to(device)
    kwargs = dict(num_members=K, rank=rank, baseline=True, antithetic=False, nonlinearity="relu",
                  return_sequence=True, **ARGS)
    with use_backend("reference"):
        expected = ops.perturbed_rnn(x.cpu(), h0.cpu(), params[0].cpu(), params[1].cpu(), params[2].cpu(), None,
                                     **kwargs)
    with use_backend(backend):
        got = ops.perturbed_rnn(x, h0, params[0], params[1], params[2], None, **kwargs)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


def test_baseline_member_is_plain_rnn():
    x, _, params = make(torch.float64, True)
    y = ops.perturbed_rnn(x, None, *params, num_members=K, **ARGS)
    rnn = torch.nn.RNN(IN, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p, name in zip(params, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")):
            getattr(rnn, name).copy_(p)
        _, h = rnn(x)
    torch.testing.assert_close(y[0], h[0])


def test_opcheck():
    x, h0, params = make(torch.float32, False, with_h0=True)
    torch.library.opcheck(torch.ops.dopamine_fast.perturbed_rnn.default,
                          (x, h0, *params, 1, 2, [0, 1, 2, 3], 0.1, K, 0, True, False, "tanh", True))


def test_bad_shapes():
    x, _, params = make(torch.float32, True)
    with pytest.raises(ValueError, match="streams"):
        ops.perturbed_rnn(x, None, *params, seed=1, step=0, streams=[1, 2], sigma=0.1, num_members=K)
    with pytest.raises(ValueError, match="x must be"):
        ops.perturbed_rnn(x[..., :2], None, *params, num_members=K, **ARGS)
    with pytest.raises(ValueError, match="h0"):
        ops.perturbed_rnn(x, torch.zeros(B + 1, H), *params, num_members=K, **ARGS)
