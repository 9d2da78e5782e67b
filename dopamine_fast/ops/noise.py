"""Reference Philox4x32-10 noise generator in PyTorch integer tensor ops (the spec of docs/noise.md).

Every other backend is tested against these functions, so they favour clarity over speed; they run on any
device that has int64 tensors. Products of two uint32 words are split into 16-bit halves so that nothing
relies on int64 overflow.
"""

from __future__ import annotations

import math

import torch

from ..plan import low_rank_numel  # noqa: F401  (defined with the plan, which the Triton kernels may import)

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
MAX_SEED = 2**63 - 1


def _mulhilo(a: int, b: torch.Tensor):
    """High and low 32-bit words of ``a * b`` for a uint32 constant ``a`` and uint32 values ``b`` (int64)."""
    t_lo = b * (a & 0xFFFF)  # < 2^48
    t_hi = b * (a >> 16)  # < 2^48
    s = t_lo + ((t_hi & 0xFFFF) << 16)
    return (t_hi >> 16) + (s >> 32), s & MASK32


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = PHILOX_ROUNDS):
    """Philox4x32 on int64 tensors holding uint32 counter words; the key is two uint32 ints."""
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


MAX_NUMEL = 4 * (MASK32 + 1)  # four elements per Philox block, 2**32 blocks


def check_int(name: str, value) -> None:
    """Raise TypeError naming the argument unless ``value`` is an integer (a bool or a numeric string is not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.50}")


def check_counter_args(seed: int, step: int, stream: int, first_id: int = 0, num_ids: int = 0,
                       numel: int = 0) -> None:
    """Raise ValueError for arguments outside the ranges the counter layout encodes (TypeError for non-integers)."""
    for name, value in (("seed", seed), ("step", step), ("stream", stream), ("first_id", first_id),
                        ("num_ids", num_ids), ("numel", numel)):
        check_int(name, value)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0 <= stream <= MASK32:
        raise ValueError(f"stream must be in [0, 2**32), got {stream}")
    if first_id < 0 or num_ids < 0 or first_id + num_ids > MASK32 + 1:
        raise ValueError(f"noise ids [{first_id}, {first_id + num_ids}) must lie in [0, 2**32)")
    if not 0 <= numel <= MAX_NUMEL:
        raise ValueError(f"numel must be in [0, 2**34], got {numel}")


def _words(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device):
    """The four Philox output words for every (noise id, block): int64 tensors of shape [num_ids, blocks]."""
    check_counter_args(seed, step, stream, first_id, num_ids, numel)
    blocks = (numel + 3) // 4
    c0 = torch.arange(blocks, dtype=torch.int64, device=device).expand(num_ids, blocks)
    c1 = torch.arange(first_id, first_id + num_ids, dtype=torch.int64, device=device)[:, None].expand(num_ids, blocks)
    c2 = torch.full_like(c0, step & MASK32)
    c3 = torch.full_like(c0, stream)
    return philox4x32(c0, c1, c2, c3, seed & MASK32, (seed >> 32) & MASK32)


def noise_bits_reference(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None):
    """Raw uint32 word of each element, as int64 of shape [num_ids, numel]."""
    x = torch.stack(_words(seed, step, stream, first_id, num_ids, numel, device), dim=-1)
    return x.reshape(num_ids, x.shape[1] * 4)[:, :numel]  # [num_ids, blocks * 4]: defined for num_ids = 0 too


def box_muller(xa: torch.Tensor, xb: torch.Tensor):
    """Two float32 normals from two uint32 words (held in int64), as docs/noise.md specifies."""
    scale = 2.0**-24
    u1 = ((xa >> 8) + 1).to(torch.float32) * scale
    u2 = (xb >> 8).to(torch.float32) * scale
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    return r * torch.cos(theta), r * torch.sin(theta)


def noise_reference(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None,
                    dtype=torch.float32):
    """Standard normals of noise ids ``first_id .. first_id+num_ids-1``: a [num_ids, numel] tensor."""
    x0, x1, x2, x3 = _words(seed, step, stream, first_id, num_ids, numel, device)
    z0, z1 = box_muller(x0, x1)
    z2, z3 = box_muller(x2, x3)
    z = torch.stack((z0, z1, z2, z3), dim=-1).reshape(num_ids, z0.shape[1] * 4)[:, :numel]
    return z.to(dtype)


def noise_into_reference(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    """The reference of the ``noise_`` op: ``noise_reference`` written into ``out`` [num_ids, numel]."""
    out.copy_(noise_reference(seed, step, stream, first_id, out.shape[0], out.shape[1], device=out.device))


def noise_bits_into_reference(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    """The reference of the ``noise_bits_`` op: ``noise_bits_reference`` written into ``out`` [num_ids, numel]."""
    out.copy_(noise_bits_reference(seed, step, stream, first_id, out.shape[0], out.shape[1], device=out.device))


def expand_noise(v: torch.Tensor, shape, rank: int) -> torch.Tensor:
    """Turn rows of stream normals ``v`` [n, low_rank_numel] into perturbations of ``shape``: [n, *shape]."""
    n = v.shape[0]
    if rank == 0 or len(shape) < 2:
        return v.reshape(n, *shape)
    out = shape[0]
    fan_in = math.prod(shape[1:])
    a = v[:, : out * rank].reshape(n, out, rank)
    b = v[:, out * rank:].reshape(n, fan_in, rank)
    return (a @ b.transpose(1, 2) / math.sqrt(rank)).reshape(n, *shape)
