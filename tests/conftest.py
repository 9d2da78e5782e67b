import os

import torch

# Triton kernels run on the CPU through the interpreter when there is no GPU; it must be set before import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from dopamine_fast import backends  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = ["cpp", "triton", "cuda"]

# Tolerances per dtype for kernels against the reference (normals differ by float32 rounding of log/sin/cos).
TOLERANCES = {
    torch.float64: dict(rtol=1e-5, atol=1e-5),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}


def backend_device_pairs(op):
    """Every (kernel backend, device) pair that can run ``op`` on this machine, as pytest params."""
    pairs = []
    for device in DEVICES:
        for backend in KERNEL_BACKENDS:
            marks = ()
            if backend not in backends.available_backends(op, device):
                marks = pytest.mark.skip(reason=f"{backend} cannot run {op} on {device} here")
            pairs.append(pytest.param(backend, device, id=f"{backend}-{device}", marks=marks))
    return pairs


def check_writes_only_the_view(backend, device, write):
    """``write(t)`` (an in-place op) on a strided [5, 39] view of a NaN-filled buffer under ``backend`` gives what
    the reference gives on a plain tensor, and leaves every element around the view untouched."""
    from dopamine_fast import use_backend

    buf = torch.full((10, 41), float("nan"), device=device)
    view = buf[2:7, 1:40]
    view.zero_()
    with use_backend(backend):
        write(view)
    expected = torch.zeros(5, 39)
    with use_backend("reference"):
        write(expected)
    torch.testing.assert_close(view.cpu(), expected, **TOLERANCES[torch.float32])
    assert torch.isnan(buf).sum() == 10 * 41 - 5 * 39
