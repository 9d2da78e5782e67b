"""perturbed_linear: the reference against an explicit construction, and every backend against the reference."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs

from dopamine_fast import backends, ops, use_backend
from dopamine_fast.ops import expand_noise, low_rank_numel, member_noise_ids, noise_reference, num_noise_ids

K, B, IN, OUT = 3, 5, 37, 29
ARGS = dict(seed=123, step=4, weight_stream=0, bias_stream=1, sigma=0.1)


def explicit(x, w, b, num_members, rank, baseline, antithetic, activation, seed, step, weight_stream, bias_stream,
             sigma):
    """Materialise every member's weights from the spec and run a plain linear layer."""
    ids, signs = member_noise_ids(num_members, baseline, antithetic)
    n = max(1, num_noise_ids(num_members, baseline, antithetic))
    ew = expand_noise(noise_reference(seed, step, weight_stream, 0, n, low_rank_numel(w.shape, rank),
                                      dtype=w.dtype), w.shape, rank)
    eb = noise_reference(seed, step, bias_stream, 0, n, w.shape[0], dtype=w.dtype)
    xs = x if x.dim() == 3 else x.expand(num_members, *x.shape)
    ys = []
    for k in range(num_members):
        wk = w + sigma * signs[k] * ew[ids[k]]
        bk = b + sigma * signs[k] * eb[ids[k]]
        ys.append(torch.nn.functional.linear(xs[k], wk, bk))
    y = torch.stack(ys)
    return {"none": y, "tanh": torch.tanh(y), "relu": torch.relu(y), "sigmoid": torch.sigmoid(y)}[activation]


def make(dtype, shared, device="cpu", k=K):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((B, IN) if shared else (k, B, IN), generator=g, dtype=dtype)
    w = torch.randn(OUT, IN, generator=g, dtype=dtype) / IN**0.5
    b = torch.randn(OUT, generator=g, dtype=dtype)
    return x.to(device), w.to(device), b.to(device)


@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("baseline,antithetic", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("shared", [True, False])
def test_reference_matches_explicit(rank, baseline, antithetic, shared):
    x, w, b = make(torch.float64, shared, k=4)
    with use_backend("reference"):
        got = ops.perturbed_linear(x, w, b, num_members=4, rank=rank, baseline=baseline, antithetic=antithetic,
                                   activation="tanh", **ARGS)
    expected = explicit(x, w, b, 4, rank, baseline, antithetic, "tanh", **ARGS)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("activation", ["none", "tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_backend_matches_reference(backend, device, activation, rank, dtype):
    for shared, baseline, antithetic in ((True, True, False), (False, False, True), (False, True, True)):
        x, w, b = make(dtype, shared, device)
        kwargs = dict(num_members=K, rank=rank, baseline=baseline, antithetic=antithetic, activation=activation,
                      **ARGS)
        with use_backend("reference"):
            expected = ops.perturbed_linear(x.cpu(), w.cpu(), b.cpu(), **kwargs)
        with use_backend(backend):
            got = ops.perturbed_linear(x, w, b, **kwargs)
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_low_rank_many_members_at_batch_one(backend, device, shared, rank):
    # Batch 1 and 101 members: the C++ kernel generates the low-rank factors a few members at a time inside
    # blocks of many members, so chunk and block boundaries fall inside the call.
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter is far too slow at this size")
    g = torch.Generator().manual_seed(4)
    k = 101
    x = torch.randn((1, IN) if shared else (k, 1, IN), generator=g)
    w, b = torch.randn(OUT, IN, generator=g) / IN**0.5, torch.randn(OUT, generator=g)
    kwargs = dict(num_members=k, rank=rank, baseline=True, antithetic=True, activation="tanh", **ARGS)
    with use_backend("reference"):
        expected = ops.perturbed_linear(x, w, b, **kwargs)
    with use_backend(backend):
        got = ops.perturbed_linear(x.to(device), w.to(device), b.to(device), **kwargs)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 4, 5])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_full_rank_on_both_sides_of_the_batch_4_split(backend, device, shared, batch, dtype):
    # The C++ kernel takes x E^T stretch by stretch of generated rows up to batch 4 (a stretch of 4096 elements is
    # 40 rows of 101 here, so stretches start inside a Philox block) and by one GEMM above; float64 always by GEMM.
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter is far too slow at this size")
    g = torch.Generator().manual_seed(5)
    k, n_in, n_out = 7, 101, 67
    x = torch.randn((batch, n_in) if shared else (k, batch, n_in), generator=g, dtype=dtype)
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype) / n_in**0.5
    b = torch.randn(n_out, generator=g, dtype=dtype)
    kwargs = dict(num_members=k, rank=0, baseline=True, antithetic=True, activation="tanh", **ARGS)
    with use_backend("reference"):
        expected = ops.perturbed_linear(x, w, b, **kwargs)
    with use_backend(backend):
        got = ops.perturbed_linear(x.to(device), w.to(device), b.to(device), **kwargs)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_backend_without_bias(backend, device):
    x, w, _ = make(torch.float32, True, device)
    kwargs = dict(num_members=K, rank=0, baseline=True, antithetic=False, activation="none", **ARGS)
    with use_backend("reference"):
        expected = ops.perturbed_linear(x.cpu(), w.cpu(), None, **kwargs)
    with use_backend(backend):
        got = ops.perturbed_linear(x, w, None, **kwargs)
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])
def test_baseline_member_is_plain_forward_and_pairs_are_symmetric(backend):
    if backend not in backends.available_backends("perturbed_linear", "cpu"):
        pytest.skip(f"{backend} not available")
    x, w, b = make(torch.float64, True)
    with use_backend(backend):
        y = ops.perturbed_linear(x, w, b, num_members=5, rank=0, baseline=True, antithetic=True,
                                 activation="none", **ARGS)
    torch.testing.assert_close(y[0], torch.nn.functional.linear(x, w, b))
    # Antithetic members 1 and 2 carry +eps and -eps: their mean is the unperturbed output (linear layer).
    torch.testing.assert_close((y[1] + y[2]) / 2, y[0])
    torch.testing.assert_close((y[3] + y[4]) / 2, y[0])
    assert not torch.allclose(y[1], y[3])


def test_opcheck():
    x, w, b = make(torch.float32, False)
    torch.library.opcheck(torch.ops.dopamine_fast.perturbed_linear.default,
                          (x, w, b, 1, 2, 0, 1, 0.1, K, 1, True, False, "tanh"))


@pytest.mark.parametrize("backend", ["cpp"])
def test_opcheck_native(backend):
    if "cpp" not in backends.available_backends("perturbed_linear", "cpu"):
        pytest.skip("native module not built")
    native = backends.implementation("perturbed_linear", "cpp")
    x, w, b = make(torch.float32, True)
    torch.library.opcheck(native, (x, w, b, 1, 2, 0, 1, 0.1, K, 0, True, True, "relu"))


def test_bad_shapes():
    x, w, b = make(torch.float32, True)
    with pytest.raises(ValueError, match="x must be"):
        ops.perturbed_linear(x[:, :5], w, b, num_members=K, **ARGS)
    with pytest.raises(ValueError, match="bias"):
        ops.perturbed_linear(x, w, b[:3], num_members=K, **ARGS)
    with pytest.raises(ValueError, match="activation"):
        ops.perturbed_linear(x, w, b, num_members=K, activation="gelu", **ARGS)
    with pytest.raises(ValueError, match="rank"):
        ops.perturbed_linear(x, w, b, num_members=K, rank=-1, **ARGS)


PEAK_SCRIPT = """
import resource, sys, torch
from dopamine_fast import backends, ops, use_backend
backend, device = sys.argv[1], sys.argv[2]
x = torch.randn(2, 1024, device=device)
w = torch.randn(1024, 1024, device=device) / 32
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
with use_backend(backend):
    y = ops.perturbed_linear(x, w, None, seed=1, step=0, weight_stream=0, bias_stream=1, sigma=0.01,
                             num_members=4097, rank=0)
if device == "cuda":
    print(torch.cuda.max_memory_allocated())
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
"""


@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_no_k_times_p_memory(backend, device):
    # K=4096 perturbed copies of a 1024x1024 layer would take K*P*4 = 16 GiB as materialised weights; the
    # kernels regenerate noise per tile, so the peak stays near the [K, B, out] output (32 MiB).
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter is far too slow at this size")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, backend, device], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak < 1 << 30, f"peak {peak / 2**20:.0f} MiB"
