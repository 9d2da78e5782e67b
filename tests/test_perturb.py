"""perturb_: the reference against the explicit noise; every backend against the reference; bad input."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs, check_writes_only_the_view

from dopamine_fast import ops, use_backend
from dopamine_fast.ops import expand_noise, low_rank_numel, noise_reference

SHAPES = [(29, 37), (13,), (3, 4, 5), (1, 1)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_reference_matches_explicit(shape, rank):
    g = torch.Generator().manual_seed(2)
    p = torch.randn(shape, generator=g, dtype=torch.float64)
    before = p.clone()
    with use_backend("reference"):
        ops.perturb_(p, seed=5, step=3, stream=2, noise_id=4, rank=rank, alpha=-0.3)
    r = rank if len(shape) >= 2 else 0
    eps = expand_noise(noise_reference(5, 3, 2, 4, 1, low_rank_numel(shape, r), dtype=torch.float64), shape, r)[0]
    torch.testing.assert_close(p, before - 0.3 * eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturb_"))
def test_backend_matches_reference(backend, device, shape, rank, dtype):
    g = torch.Generator().manual_seed(3)
    p = torch.randn(shape, generator=g).to(dtype)
    expected = p.clone()
    with use_backend("reference"):
        ops.perturb_(expected, seed=8, step=1, stream=4, noise_id=7, rank=rank, alpha=0.7)
    got = p.to(device)
    with use_backend(backend):
        ops.perturb_(got, seed=8, step=1, stream=4, noise_id=7, rank=rank, alpha=0.7)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend,device", backend_device_pairs("perturb_"))
def test_backend_writes_only_the_parameter(backend, device):
    check_writes_only_the_view(backend, device, lambda t: ops.perturb_(t, seed=1, step=1, stream=1, noise_id=2,
                                                                        rank=0, alpha=1.0))


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturb_"))
def test_restore_is_within_rounding(backend, device, rank):
    """Adding ``-alpha`` after ``+alpha`` gives the weights back up to one rounding per pass."""
    p = torch.randn(33, 21, generator=torch.Generator().manual_seed(4)).to(device)
    before = p.clone()
    with use_backend(backend):
        ops.perturb_(p, seed=3, step=2, stream=1, noise_id=0, rank=rank, alpha=0.05)
        moved = (p - before).abs()
        ops.perturb_(p, seed=3, step=2, stream=1, noise_id=0, rank=rank, alpha=-0.05)
    assert moved.max() > 1e-3
    bound = 2 * torch.finfo(p.dtype).eps * (before.abs() + moved)
    assert ((p - before).abs() <= bound).all()


def test_member_perturbation_of_the_optimizer_matches():
    """perturb_ adds exactly the noise the optimizers' batched path uses for that member (rpe_update_'s eps_j)."""
    p = torch.zeros(6, 10, dtype=torch.float64)
    ops.perturb_(p, seed=9, step=4, stream=3, noise_id=2, rank=2, alpha=1.0)
    q = torch.zeros(6, 10, dtype=torch.float64)
    ops.rpe_update_(q, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), seed=9, step=4, stream=3, rank=2)
    torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)  # normals differ by float32 rounding


def test_opcheck():
    for rank in (0, 2):
        torch.library.opcheck(torch.ops.dopamine_fast.perturb_.default, (torch.randn(7, 9), 1, 2, 3, 4, rank, 0.5))


@pytest.mark.parametrize("kwargs,match", [
    (dict(noise_id=-1), "noise_id"), (dict(noise_id=2**32), "noise_id"), (dict(rank=-1), "rank"),
    (dict(alpha=float("nan")), "alpha"), (dict(stream=-2), "stream"), (dict(seed=-1), "seed"),
])
def test_bad_arguments(kwargs, match):
    p = torch.randn(4, 5)
    before = p.clone()
    args = {**dict(seed=1, step=0, stream=0, noise_id=0, rank=0, alpha=1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        ops.perturb_(p, **args)
    assert torch.equal(p, before)


def test_bad_param():
    with pytest.raises(ValueError, match="param must be floating"):
        ops.perturb_(torch.zeros(3, dtype=torch.int64), seed=1, step=0, stream=0, noise_id=0)
    with pytest.raises(ValueError, match="param has elements that share memory"):
        ops.perturb_(torch.zeros(3).expand(4, 3), seed=1, step=0, stream=0, noise_id=0)
