"""rpe_update_: the reference against an explicit sum of noise; every backend against the reference."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs, check_writes_only_the_view

from dopamine_fast import backends, ops, use_backend
from dopamine_fast.ops import expand_noise, low_rank_numel, noise_reference

SHAPES = [(29, 37), (13,), (3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_reference_matches_explicit(shape, rank):
    g = torch.Generator().manual_seed(2)
    p = torch.randn(shape, generator=g, dtype=torch.float64)
    coeffs = torch.randn(6, generator=g, dtype=torch.float64)
    before = p.clone()
    with use_backend("reference"):
        ops.rpe_update_(p, coeffs, seed=5, step=3, stream=2, rank=rank, alpha=-0.3)
    r = rank if len(shape) >= 2 else 0
    eps = expand_noise(noise_reference(5, 3, 2, 0, 6, low_rank_numel(shape, r), dtype=torch.float64), shape, r)
    torch.testing.assert_close(p, before - 0.3 * torch.einsum("j,j...->...", coeffs, eps))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("backend,device", backend_device_pairs("rpe_update_"))
def test_backend_matches_reference(backend, device, shape, rank, dtype):
    g = torch.Generator().manual_seed(3)
    p = torch.randn(shape, generator=g).to(dtype)
    coeffs = torch.randn(5, generator=g).to(dtype)
    expected = p.clone()
    with use_backend("reference"):
        ops.rpe_update_(expected, coeffs, seed=8, step=1, stream=4, rank=rank, alpha=0.7)
    got = p.to(device)
    with use_backend(backend):
        ops.rpe_update_(got, coeffs.to(device), seed=8, step=1, stream=4, rank=rank, alpha=0.7)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(300,), (37, 41)])
@pytest.mark.parametrize("backend,device", backend_device_pairs("rpe_update_"))
def test_small_parameter_many_ids(backend, device, shape, dtype):
    # A bias at large K: a few hundred elements and hundreds of ids, which the C++ kernel splits across threads.
    g = torch.Generator().manual_seed(6)
    p = torch.randn(shape, generator=g).to(dtype)
    coeffs = torch.randn(201, generator=g).to(dtype)
    coeffs[7] = 0  # a zero coefficient (the baseline's) generates nothing
    expected = p.clone()
    with use_backend("reference"):
        ops.rpe_update_(expected, coeffs, seed=2, step=9, stream=1, rank=0, alpha=0.01)
    got = p.to(device)
    with use_backend(backend):
        ops.rpe_update_(got, coeffs.to(device), seed=2, step=9, stream=1, rank=0, alpha=0.01)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("numel", [300, 8 * 2048 + 5])
def test_cpp_bits_do_not_depend_on_the_thread_count(numel):
    # Weights must be the same bits on every machine and rank whatever its thread count.
    if "cpp" not in backends.available_backends("rpe_update_", "cpu"):
        pytest.skip("native module not built")
    g = torch.Generator().manual_seed(7)
    p0 = torch.randn(numel, generator=g)
    coeffs = torch.randn(333, generator=g)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            p = p0.clone()
            with use_backend("cpp"):
                ops.rpe_update_(p, coeffs, seed=3, step=1, stream=5, rank=0, alpha=0.1)
            results.append(p)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    assert not torch.equal(results[0], p0)


@pytest.mark.parametrize("backend,device", backend_device_pairs("rpe_update_"))
def test_backend_writes_only_the_parameter(backend, device):
    check_writes_only_the_view(backend, device, lambda t: ops.rpe_update_(
        t, torch.ones(3, device=t.device), seed=1, step=1, stream=1, rank=0, alpha=1.0))


def test_opcheck():
    p = torch.randn(7, 9)
    torch.library.opcheck(torch.ops.dopamine_fast.rpe_update_.default, (p, torch.randn(4), 1, 2, 3, 1, 0.5))


def test_bad_coeffs():
    with pytest.raises(ValueError, match="coeffs"):
        ops.rpe_update_(torch.zeros(3), torch.zeros(2, 2), seed=1, step=0, stream=0)
