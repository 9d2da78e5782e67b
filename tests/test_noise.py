"""The noise generator: Random123 known answers, statistics, no overlap, and every backend against the reference."""

import math

import pytest
import torch
from conftest import backend_device_pairs
from scipy import stats

from dopamine_fast import ops, use_backend
from dopamine_fast.ops.noise import noise_bits_reference, noise_reference, philox4x32

# Random123's kat_vectors: counter (4 words), key (2 words), expected output (4 words).
KAT = [
    ((0x00000000,) * 4, (0x00000000,) * 2, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    words = philox4x32(*(torch.tensor([c], dtype=torch.int64) for c in counter), *key)
    assert [int(w) for w in words] == list(expected)


def test_counter_layout_matches_spec():
    # Element e of (seed, step, stream, id) is word e & 3 of Philox(counter=(e >> 2, id, step, stream), key=seed).
    seed, step, stream, first_id = (0x299F31D0 << 32) | 0xA4093822, 0x13198A2E, 0x03707344, 5
    bits = noise_bits_reference(seed, step, stream, first_id, 2, 11)
    for j in range(2):
        for e in (0, 3, 4, 10):
            c = [torch.tensor([v]) for v in (e >> 2, first_id + j, step, stream)]
            words = philox4x32(*c, seed & 0xFFFFFFFF, seed >> 32)
            assert int(bits[j, e]) == int(words[e & 3])


def test_moments_and_normality():
    z = noise_reference(seed=1234, step=7, stream=3, first_id=0, num_ids=4, numel=50_001).flatten().double()
    n = z.numel()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z.numpy())) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z.numpy())) < 5 * math.sqrt(24 / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert z.abs().max() <= math.sqrt(48 * math.log(2)) + 1e-5


@pytest.mark.parametrize("change", ["seed", "step", "stream", "id"])
def test_streams_do_not_overlap(change):
    base = dict(seed=11, step=3, stream=2, first_id=0, num_ids=1, numel=4096)
    other = dict(base)
    other[{"id": "first_id"}.get(change, change)] += 1
    a = set(noise_bits_reference(**base).flatten().tolist())
    b = set(noise_bits_reference(**other).flatten().tolist())
    # Independent uint32 draws of 4096 words collide by chance with probability ~0.4%; streams that
    # overlapped would share a whole run of words.
    assert len(a & b) <= 2


def test_uncorrelated_between_members():
    z = noise_reference(seed=5, step=0, stream=0, first_id=0, num_ids=8, numel=20_000).double()
    corr = torch.corrcoef(z)
    off = corr - torch.eye(8, dtype=torch.float64)
    assert off.abs().max() < 5 / math.sqrt(20_000)


def test_slices_are_consistent():
    full = noise_reference(seed=9, step=4, stream=1, first_id=0, num_ids=6, numel=13)
    part = noise_reference(seed=9, step=4, stream=1, first_id=2, num_ids=3, numel=7)
    assert torch.equal(full[2:5, :7], part)


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        ops.noise(-1, 0, 0, 0, 1, 4)
    with pytest.raises(ValueError, match="stream"):
        ops.noise(0, 0, 2**32, 0, 1, 4)
    with pytest.raises(ValueError, match="step"):
        ops.noise(0, -2, 0, 0, 1, 4)


@pytest.mark.parametrize("numel", [1, 3, 37, 1029])
@pytest.mark.parametrize("backend,device", backend_device_pairs("noise_bits_"))
def test_backend_bits_identical(backend, device, numel):
    seed, step, stream, first_id, num_ids = 2**40 + 12345, 2**32 + 17, 7, 3, 5
    expected = noise_bits_reference(seed, step, stream, first_id, num_ids, numel)
    with use_backend(backend):
        got = ops.noise_bits(seed, step, stream, first_id, num_ids, numel, device=device)
    assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numel", [1, 5, 37, 1029])
@pytest.mark.parametrize("backend,device", backend_device_pairs("noise_"))
def test_backend_normals_match(backend, device, numel, dtype):
    expected = noise_reference(77, 3, 2, 1, 3, numel, dtype=dtype)
    with use_backend(backend):
        got = ops.noise(77, 3, 2, 1, 3, numel, device=device, dtype=dtype)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,device", backend_device_pairs("noise_"))
def test_backend_writes_only_its_output(backend, device):
    buf = torch.full((4, 40), float("nan"), device=device)
    with use_backend(backend):
        torch.ops.dopamine_fast.noise_(buf[1:3, 3:30], 1, 2, 3, 0)
    expected = noise_reference(1, 2, 3, 0, 2, 27)
    torch.testing.assert_close(buf[1:3, 3:30].cpu(), expected, rtol=1e-5, atol=1e-5)
    rest = buf.clone()
    rest[1:3, 3:30] = 0
    assert torch.isnan(rest).sum() == 4 * 40 - 2 * 27


def test_opcheck_public_op():
    out = torch.empty(3, 21)
    torch.library.opcheck(torch.ops.dopamine_fast.noise_.default, (out, 1, 2, 3, 4))
