"""The Triton launchers as torch.library ops (``dopamine_fast_triton::*``): schema, fake kernels, compile tracing."""

import pytest
import torch
from conftest import DEVICES

from dopamine_fast import _triton_support, backends

pytestmark = pytest.mark.skipif(_triton_support.status() is not None,
                                reason=f"triton kernels cannot run here: {_triton_support.status()}")


def triton_op(name):
    if "triton" not in backends.available_backends(name, "cpu"):
        pytest.skip(f"no triton implementation of {name}")
    return getattr(torch.ops.dopamine_fast_triton, name).default


def devices():
    # Under the interpreter Triton runs CPU tensors; compiled, only CUDA ones.
    return [d for d in DEVICES if d == "cuda" or _triton_support.interpreted()]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", ["noise_", "noise_bits_"])
def test_opcheck_noise(name, device):
    dtype = torch.int64 if name == "noise_bits_" else torch.float32
    out = torch.empty(3, 21, dtype=dtype, device=device)
    torch.library.opcheck(triton_op(name), (out, 2**40 + 1, 2, 3, 4))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("rank", [0, 2])
def test_opcheck_perturbed_linear(rank, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, generator=g).to(device)
    w = torch.randn(6, 7, generator=g).to(device)
    b = torch.randn(6, generator=g).to(device)
    torch.library.opcheck(triton_op("perturbed_linear"), (x, w, b, 1, 2, 0, 1, 0.1, 3, rank, True, True, "tanh"))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("rank", [0, 1])
def test_opcheck_perturbed_rnn(rank, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, generator=g).to(device)
    h0 = torch.randn(3, 2, 5, generator=g).to(device)
    params = [torch.randn(5, 2, generator=g).to(device), torch.randn(5, 5, generator=g).to(device),
              torch.randn(5, generator=g).to(device), None]
    torch.library.opcheck(triton_op("perturbed_rnn"),
                          (x, h0, *params, 1, 2, [0, 1, 2, 3], 0.1, 3, rank, True, False, "relu", True))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("rank", [0, 1])
def test_opcheck_rpe_update(rank, device):
    g = torch.Generator().manual_seed(2)
    p = torch.randn(7, 9, generator=g).to(device)
    torch.library.opcheck(triton_op("rpe_update_"), (p, torch.randn(4, generator=g).to(device), 1, 2, 3, rank, 0.5))
