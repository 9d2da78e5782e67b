"""The member numbering (member 0 unperturbed, antithetic pairs) has one definition,
``dopamine_fast.plan.member_noise_ids``; each kernel language keeps its own copy (C++ ``member_noise`` in
``csrc/ops.h``, used by the CPU kernels and CUDA's low-rank path; the full-rank CUDA kernel's ``slot_of`` in
``csrc/cuda/perturbed_matmul.cu``; Triton's ``member_noise``). Each copy is read back through an op's output and
checked against the definition: with zero weights, an identity input and no bias, member ``m`` of
``perturbed_linear`` returns its own perturbation ``sign_m * sigma * eps_{id_m}``, and ``perturbed_rnn`` one step of
it through tanh."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs

from dopamine_fast import ops, use_backend
from dopamine_fast.ops import expand_noise, low_rank_numel, noise_reference
from dopamine_fast.plan import member_noise_ids, num_noise_ids

SEED, STEP, STREAM, SIGMA = 11, 3, 2, 0.5
IN, OUT = 7, 5
# Member counts around the pairs: a lone unpaired last member, one member only, with and without the baseline.
CASES = [(m, baseline, antithetic) for m in (1, 2, 5, 6) for baseline in (True, False) for antithetic in (False, True)]


def perturbations(num_members, baseline, antithetic, rank, dtype):
    """``sign_m * sigma * eps_{id_m}`` of an [OUT, IN] weight for every member, from ``member_noise_ids``."""
    ids, signs = member_noise_ids(num_members, baseline, antithetic)
    n = max(1, num_noise_ids(num_members, baseline, antithetic))
    eps = expand_noise(noise_reference(SEED, STEP, STREAM, 0, n, low_rank_numel((OUT, IN), rank), dtype=dtype),
                       (OUT, IN), rank)
    return SIGMA * signs.to(dtype)[:, None, None] * eps[ids]


@pytest.mark.parametrize("rank", [0, 2])  # the full-rank and the low-rank kernels number the members apart
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_perturbed_linear_members_carry_the_plans_noise(backend, device, rank):
    dtype = torch.float64
    x, w = torch.eye(IN, dtype=dtype, device=device), torch.zeros(OUT, IN, dtype=dtype, device=device)
    for num_members, baseline, antithetic in CASES:
        with use_backend(backend):
            got = ops.perturbed_linear(x, w, None, SEED, STEP, STREAM, STREAM + 1, SIGMA, num_members, rank,
                                       baseline, antithetic, "none")
        expected = perturbations(num_members, baseline, antithetic, rank, dtype).transpose(1, 2)  # row i: column i
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype],
                                   msg=lambda m: f"{num_members} members, baseline={baseline}, "
                                                 f"antithetic={antithetic}: {m}")


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_rnn"))
def test_perturbed_rnn_members_carry_the_plans_noise(backend, device, rank):
    dtype = torch.float64
    x = torch.eye(IN, dtype=dtype, device=device)[:, None, :]  # [B=IN, T=1, IN]
    w_ih = torch.zeros(OUT, IN, dtype=dtype, device=device)
    w_hh = torch.zeros(OUT, OUT, dtype=dtype, device=device)
    for num_members, baseline, antithetic in CASES:
        with use_backend(backend):
            got = ops.perturbed_rnn(x, None, w_ih, w_hh, None, None, SEED, STEP, [STREAM, 4, 5, 6], SIGMA,
                                    num_members, rank, baseline, antithetic, "tanh", False)
        expected = torch.tanh(perturbations(num_members, baseline, antithetic, rank, dtype).transpose(1, 2))
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype],
                                   msg=lambda m: f"{num_members} members, baseline={baseline}, "
                                                 f"antithetic={antithetic}: {m}")
